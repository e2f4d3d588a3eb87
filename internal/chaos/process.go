package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Exe says how to start this binary again in a role: the program and its
// leading arguments (a test binary needs "-test.run=^$").
type Exe struct {
	Path string
	Args []string
}

// process is a role process the harness started and owns.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
}

// startProcess starts exe in role with env. Stderr goes to logPath. When
// onLine is set it receives every stdout line (from the reaping goroutine
// side; it must not block long). ready, when set, is the stdout line to
// wait for before returning.
func startProcess(ctx context.Context, exe Exe, name, role, logPath string, env []string, onLine func(string), ready string) (*process, error) {
	cmd := exec.Command(exe.Path, exe.Args...)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role, "CHAOS_NAME="+name), env...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	readyc := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if !seen && ready != "" && strings.TrimSpace(line) == ready {
				seen = true
				close(readyc)
				continue
			}
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		logf.Close()
	}()
	if ready == "" {
		return p, nil
	}
	select {
	case <-readyc:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready (log %s)", name, logPath)
	case <-ctx.Done():
		p.kill()
		return nil, fmt.Errorf("%s not ready: %w", name, ctx.Err())
	}
}

func (p *process) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

// kill sends SIGKILL (which also ends a stopped process) and waits until
// the process is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
