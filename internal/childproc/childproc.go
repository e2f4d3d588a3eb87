// Package childproc runs a program as a child process that the caller
// owns: the one way Baton's harnesses (the chaos run, the bench, the
// process tests of sidecar and cmd/baton) start a program — usually the
// running binary again, in a role — wait until it says it is ready,
// follow its output, stop it and reap it.
//
// A Process starts with Start and ends reaped, always: its child's two
// output streams are each read line by line by a goroutine of the
// Process, and a third reaps the child once both reach end of file
// (which is when the child, and anything it started that shares them,
// has exited). Done is closed after that; nothing of the Process runs
// on. The owner stops the child with Stop (SIGTERM, then SIGKILL after a
// grace period) or Kill (SIGKILL at once), or waits for it to exit by
// itself with Wait.
//
// What the child writes goes, line by line and in order, to the callbacks
// and writers of Config; the last TailLines lines of stderr are kept for
// errors. Readiness is a line: Config.Ready says which, and WaitReady
// waits for it, for the child's exit, or for ctx.
package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailLines is how many of the last stderr lines a Process keeps.
const TailLines = 20

// Exe says how to start a program: its path, the arguments that go
// before the caller's own, and variables added to the parent's
// environment. A test binary that re-runs itself in a role passes
// os.Args[0], "-test.run=^$" and its role variable.
type Exe struct {
	Path string
	Args []string
	Env  []string
}

// Stream names one of the child's output streams.
type Stream int

// The child's output streams.
const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Config says what to start and how to follow it. Exe.Path is required.
type Config struct {
	// Name names the process in errors. Default: the base name of
	// Exe.Path.
	Name string
	Exe  Exe
	// Args follow Exe.Args; Env follows Exe.Env (a later entry wins).
	Args []string
	Env  []string
	// Stdin, when true, gives the child a pipe as its stdin that stays
	// open until Stop or Kill closes it, or the parent dies: a child that
	// reads its stdin to end of file learns that its parent is gone.
	// Otherwise stdin is /dev/null.
	Stdin bool
	// StdoutTo and StderrTo receive each line of the stream with its
	// newline (nil: the line is dropped). OnStdout and OnStderr, when
	// set, receive each line without it, after the writer. Each stream's
	// lines are delivered by its own goroutine, one at a time and in
	// order; the two streams' run at the same time. A slow callback
	// holds up the child once the pipe's buffer is full.
	StdoutTo, StderrTo io.Writer
	OnStdout, OnStderr func(line string)
	// Ready, when set, says whether a line of stream ReadyOn (default
	// Stdout) shows that the child is ready; it sees the lines up to the
	// first for which it returns true, before the stream's callback.
	Ready   func(line string) bool
	ReadyOn Stream
	// AfterExit, when set, runs once the child has been reaped and its
	// output delivered, before Done is closed: e.g. it closes the file
	// StderrTo writes to.
	AfterExit func()
}

// Process is a running child. Its methods are safe for concurrent use.
type Process struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser // nil unless Config.Stdin
	ready chan struct{}  // closed at the first line Config.Ready accepts
	done  chan struct{}  // closed once the child is reaped

	// Written by the stderr reader (tail) and the reaper (err) before
	// done closes.
	mu      sync.Mutex
	tail    []string
	waitErr error
}

// Start starts the child and the goroutines that follow it. It does not
// wait for readiness (WaitReady does). The caller owns the Process and
// must end it (Stop, Kill, or Wait for a child that exits by itself).
func Start(cfg Config) (*Process, error) {
	if cfg.Exe.Path == "" {
		return nil, errors.New("childproc: Exe.Path is required")
	}
	name := cfg.Name
	if name == "" {
		name = filepath.Base(cfg.Exe.Path)
	}
	cmd := exec.Command(cfg.Exe.Path, append(append([]string{}, cfg.Exe.Args...), cfg.Args...)...)
	cmd.Env = append(append(os.Environ(), cfg.Exe.Env...), cfg.Env...)
	p := &Process{name: name, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	var err error
	if cfg.Stdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	var readyOnce sync.Once
	follow := func(s Stream, r io.Reader, w io.Writer, on func(string)) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		waiting := cfg.Ready != nil && cfg.ReadyOn == s
		for sc.Scan() {
			line := sc.Text()
			if waiting && cfg.Ready(line) {
				waiting = false
				readyOnce.Do(func() { close(p.ready) })
			}
			if w != nil {
				_, _ = io.WriteString(w, line+"\n")
			}
			if on != nil {
				on(line)
			}
			if s == Stderr {
				p.mu.Lock()
				if p.tail = append(p.tail, line); len(p.tail) > TailLines {
					p.tail = p.tail[1:]
				}
				p.mu.Unlock()
			}
		}
		// A line past the scanner's limit ends the lines; the rest is
		// drained so that the child is never blocked on a full pipe.
		_, _ = io.Copy(io.Discard, r)
	}
	var readers sync.WaitGroup
	readers.Go(func() { follow(Stdout, stdout, cfg.StdoutTo, cfg.OnStdout) })
	readers.Go(func() { follow(Stderr, stderr, cfg.StderrTo, cfg.OnStderr) })
	go func() { // the reaper: exec.Cmd.Wait closes the pipes, so it runs after the readers
		readers.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		if cfg.AfterExit != nil {
			cfg.AfterExit()
		}
		close(p.done)
	}()
	return p, nil
}

// Name is the process's name in errors.
func (p *Process) Name() string { return p.name }

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Ready is closed at the first line that Config.Ready accepted; never
// when Config.Ready is nil.
func (p *Process) Ready() <-chan struct{} { return p.ready }

// Exited reports whether the child has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitReady waits until the child printed its ready line. It fails when
// the child exits first (with its exit status and last stderr lines) or
// ctx ends first (the child keeps running: its owner still ends it).
func (p *Process) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	default:
	}
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready: %v%s", p.name, p.exitErr(), p.tailSuffix())
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w%s", p.name, context.Cause(ctx), p.tailSuffix())
	}
}

// Signal sends sig to the child (SIGSTOP and SIGCONT pause and resume
// it). It fails once the child has been reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

// Kill sends SIGKILL (which also ends a stopped child) and waits until
// the child is reaped. Calling it again, or after the child exited, does
// nothing.
func (p *Process) Kill() {
	p.closeStdin()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the child to exit: it closes its stdin (Config.Stdin), sends
// SIGTERM and waits up to grace, then sends SIGKILL, and returns once the
// child is reaped. The error says when the child had to be killed, or
// else is Wait's. Calling it again, or after the child exited, returns
// the exit error again.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.Wait()
	}
	p.closeStdin()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.Wait()
	case <-t.C:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %v of SIGTERM%s", p.name, grace, p.tailSuffix())
	}
}

// Wait waits until the child has exited and been reaped; the error says
// how it exited when it did not exit with status 0, with its last stderr
// lines.
func (p *Process) Wait() error {
	<-p.done
	if err := p.exitErr(); err != nil {
		return fmt.Errorf("%s: %w%s", p.name, err, p.tailSuffix())
	}
	return nil
}

// State is the child's exit state (exit code, resource usage); nil until
// Done is closed.
func (p *Process) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.cmd.ProcessState
}

// Tail returns the last TailLines lines of stderr, joined by newlines.
func (p *Process) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *Process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

func (p *Process) tailSuffix() string {
	if t := p.Tail(); t != "" {
		return "; last lines of its stderr:\n" + t
	}
	return ""
}

func (p *Process) closeStdin() {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
}
