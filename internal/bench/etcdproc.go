package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/embedetcd"
)

// The bench's own etcd runs in a process of its own (`baton bench-etcd`,
// the same embedded server as `baton dev`), so that the CPU time of the
// bench process is the sidecars' and consumers' alone and etcd's is read
// from /proc apart.

// etcdReadyPrefix starts the line ServeEtcd prints once etcd serves.
const etcdReadyPrefix = "etcd serving on "

// ServeEtcd runs a single-member etcd with its data in a temporary
// directory and quotaBytes as its --quota-backend-bytes (0: etcd's 2 GiB),
// prints "etcd serving on HOST:PORT" to w once it serves, and runs until
// ctx ends or stdin reaches end of file (the parent closed it or died). It
// is the body of the hidden `baton bench-etcd` command.
func ServeEtcd(ctx context.Context, stdin io.Reader, w io.Writer, quotaBytes int64) error {
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	etcd, err := embedetcd.Start(startCtx, embedetcd.Config{QuotaBackendBytes: quotaBytes})
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
	proc     *childproc.Process
	endpoint string
}

// StartEtcd starts `baton bench-etcd` with exe and waits until it serves
// (at most 30s) or ctx ends. Its stdin is a pipe that Stop closes: it
// exits by itself when the bench does, however that ends.
func StartEtcd(ctx context.Context, exe childproc.Exe, quotaBytes int64) (*EtcdProc, error) {
	e := &EtcdProc{}
	p, err := childproc.Start(childproc.Config{
		Name:     "etcd",
		Exe:      exe,
		Args:     []string{"bench-etcd", "--quota-bytes", strconv.FormatInt(quotaBytes, 10)},
		Stdin:    true,
		StderrTo: os.Stderr,
		Ready: func(line string) bool { // read once WaitReady returns
			ep, ok := strings.CutPrefix(line, etcdReadyPrefix)
			if ok {
				e.endpoint = ep
			}
			return ok
		},
	})
	if err != nil {
		return nil, err
	}
	e.proc = p
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitReady(rctx); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Endpoint is the client address, host:port.
func (p *EtcdProc) Endpoint() string { return p.endpoint }

// PID is the process id, for reading its CPU time.
func (p *EtcdProc) PID() int { return p.proc.PID() }

// Stop ends the process (closing its stdin, then SIGTERM, then SIGKILL
// after 10s) and waits for it. Calling it again does nothing.
func (p *EtcdProc) Stop() {
	_ = p.proc.Stop(10 * time.Second)
}
