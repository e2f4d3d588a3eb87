package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
)

// The bench's own etcd runs in a process of its own (`baton bench-etcd`,
// the same embedded server as `baton dev`), so that the CPU time of the
// bench process is the sidecars' and consumers' alone and etcd's is read
// from /proc apart.

// etcdReadyPrefix starts the line ServeEtcd prints once etcd serves.
const etcdReadyPrefix = "etcd serving on "

// ServeEtcd runs a single-member etcd with its data in a temporary
// directory, prints "etcd serving on HOST:PORT" to w once it serves, and
// runs until ctx ends or stdin reaches end of file (the parent closed it
// or died). It is the body of the hidden `baton bench-etcd` command.
func ServeEtcd(ctx context.Context, stdin io.Reader, w io.Writer) error {
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	etcd, err := embedetcd.Start(startCtx, embedetcd.Config{})
	cancel()
	if err != nil {
		return err
	}
	defer etcd.Close()
	if _, err := fmt.Fprintln(w, etcdReadyPrefix+etcd.Endpoint()); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() { // ends when stdin closes, which happens when the parent exits
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
		return nil
	case <-eof:
		return nil
	case err := <-etcd.Err():
		return err
	}
}

// EtcdProc is an etcd child process started by StartEtcd.
type EtcdProc struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	endpoint string
	done     chan struct{} // closed when the process has been reaped
	waitErr  error         // set before done closes
}

// StartEtcd starts `baton bench-etcd` with exe and waits until it serves
// (at most 30s) or ctx ends.
func StartEtcd(ctx context.Context, exe Exe) (*EtcdProc, error) {
	cmd := exec.Command(exe.Path, append(append([]string{}, exe.Args...), "bench-etcd")...)
	cmd.Env = append(os.Environ(), exe.Env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	p := &EtcdProc{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if ep, ok := strings.CutPrefix(sc.Text(), etcdReadyPrefix); ok {
				ready <- ep
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case p.endpoint = <-ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("etcd exited before serving: %v", p.waitErr)
	case <-t.C:
		p.Stop()
		return nil, fmt.Errorf("etcd not serving within 30s")
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	}
}

// Endpoint is the client address, host:port.
func (p *EtcdProc) Endpoint() string { return p.endpoint }

// PID is the process id, for reading its CPU time.
func (p *EtcdProc) PID() int { return p.cmd.Process.Pid }

// Stop ends the process (closing its stdin, then SIGTERM, then SIGKILL
// after 10s) and waits for it. Calling it again does nothing.
func (p *EtcdProc) Stop() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
