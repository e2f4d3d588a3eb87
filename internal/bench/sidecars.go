package bench

import (
	"bufio"
	"context"
	"encoding/json"
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

	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/etcdconn"
)

// queue is the queue every bench sidecar serves.
const queue = "bench"

// sidecarProc is one `baton sidecar` process the bench started and owns.
// Its stderr (JSON logs) is read by one goroutine that ends when the
// process closes it.
type sidecarProc struct {
	name   string
	socket string
	cmd    *exec.Cmd
	done   chan struct{} // closed when stderr is drained and the process reaped
	ready  chan struct{} // closed at the "sidecar serving" log line

	mu      sync.Mutex
	stopped map[string]any // attributes of the "sidecar stopped" line
	tail    []string       // the last lines of stderr, for errors
	waitErr error
}

// startSidecars starts n sidecar processes in namespace ns and waits until
// all serve. On error it stops the ones it started.
func startSidecars(ctx context.Context, exe Exe, ec etcdconn.Config, ns, dir string, n int) ([]*sidecarProc, error) {
	ps := make([]*sidecarProc, 0, n)
	for i := range n {
		p, err := startSidecar(exe, ec, ns, dir, fmt.Sprintf("bench-%d", i))
		if err != nil {
			stopSidecars(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for _, p := range ps {
		select {
		case <-p.ready:
		case <-p.done:
			stopSidecars(ps)
			return nil, fmt.Errorf("sidecar %s exited before serving: %v\n%s", p.name, p.waitErr, p.lastLines())
		case <-deadline.C:
			stopSidecars(ps)
			return nil, fmt.Errorf("sidecar %s not serving within 30s\n%s", p.name, p.lastLines())
		case <-ctx.Done():
			stopSidecars(ps)
			return nil, ctx.Err()
		}
	}
	return ps, nil
}

// etcdEnv passes the etcd settings to a child as BATON_* variables (which
// also keeps a password off the command line).
func etcdEnv(ec etcdconn.Config, ns string) []string {
	return []string{
		"BATON_ENDPOINTS=" + strings.Join(ec.Endpoints, ","),
		"BATON_NAMESPACE=" + ns,
		"BATON_ETCD_USER=" + ec.Username,
		"BATON_ETCD_PASSWORD=" + ec.Password,
		"BATON_ETCD_CACERT=" + ec.CACert,
		"BATON_ETCD_CERT=" + ec.Cert,
		"BATON_ETCD_KEY=" + ec.Key,
	}
}

func startSidecar(exe Exe, ec etcdconn.Config, ns, dir, name string) (*sidecarProc, error) {
	socket := filepath.Join(dir, name+".sock")
	args := append(append([]string{}, exe.Args...),
		"--log-format", "json", "--log-level", "info",
		"sidecar", "--socket", socket, "--queue", queue, "--worker-id", name, "--grace", "1s",
		// Measured as deployed: metrics on, on a port of its own.
		"--admin-addr", "127.0.0.1:0")
	cmd := exec.Command(exe.Path, args...)
	cmd.Env = append(append(os.Environ(), exe.Env...), etcdEnv(ec, ns)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting sidecar %s: %w", name, err)
	}
	p := &sidecarProc{name: name, socket: socket, cmd: cmd, done: make(chan struct{}), ready: make(chan struct{})}
	go p.readLog(stderr)
	return p, nil
}

// readLog follows the sidecar's JSON log until the process closes stderr,
// then reaps the process.
func (p *sidecarProc) readLog(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	serving := false
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			switch rec["msg"] {
			case "sidecar serving":
				if !serving {
					serving = true
					close(p.ready)
				}
			case "sidecar stopped":
				p.mu.Lock()
				p.stopped = rec
				p.mu.Unlock()
			}
		}
		p.mu.Lock()
		if p.tail = append(p.tail, line); len(p.tail) > 20 {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
	err := p.cmd.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
}

func (p *sidecarProc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *sidecarProc) pid() int { return p.cmd.Process.Pid }

// stop asks the sidecar to shut down (SIGTERM), waits up to 15s, then
// kills it. It returns an error if it had to kill it or it failed.
func (p *sidecarProc) stop() error {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(15 * time.Second)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("sidecar %s did not stop within 15s of SIGTERM", p.name)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr != nil {
		return fmt.Errorf("sidecar %s: %w\n%s", p.name, p.waitErr, strings.Join(p.tail, "\n"))
	}
	return nil
}

// stopAndCount stops the sidecars and sums the dispatcher counters they
// logged on the way out.
func stopAndCount(ps []*sidecarProc) (dispatcherStats, error) {
	if err := stopSidecars(ps); err != nil {
		return dispatcherStats{}, err
	}
	return sumStats(ps)
}

// stopSidecars stops them all at once and returns their errors joined.
// Stopping them again only reports their exit errors again.
func stopSidecars(ps []*sidecarProc) error {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { errs[i] = p.stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dispatcherStats are the dispatcher counters a sidecar logs when it stops.
type dispatcherStats struct {
	Claims, Conflicts int64
}

// stats returns the counters of the "sidecar stopped" line; call it after
// stop.
func (p *sidecarProc) stats() (dispatcherStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped == nil {
		return dispatcherStats{}, fmt.Errorf("sidecar %s logged no \"sidecar stopped\" line", p.name)
	}
	num := func(k string) (int64, error) {
		v, ok := p.stopped[k].(float64)
		if !ok {
			return 0, fmt.Errorf("sidecar %s: \"sidecar stopped\" has no %q", p.name, k)
		}
		return int64(v), nil
	}
	var s dispatcherStats
	var err1, err2 error
	s.Claims, err1 = num("claims")
	s.Conflicts, err2 = num("conflicts")
	return s, errors.Join(err1, err2)
}

// sampleCPU returns the CPU time used so far by all of ps.
func sampleCPU(ps []*sidecarProc) (time.Duration, error) {
	var total time.Duration
	for _, p := range ps {
		c, err := procCPU(p.pid())
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}

// resetPeaks resets the peak resident set size of all of ps.
func resetPeaks(ps []*sidecarProc) error {
	for _, p := range ps {
		if err := resetPeak(p.pid()); err != nil {
			return fmt.Errorf("resetting the peak RSS of sidecar %s: %w", p.name, err)
		}
	}
	return nil
}

// peakRSS returns the largest peak resident set size among ps, in bytes.
func peakRSS(ps []*sidecarProc) (int64, error) {
	var peak int64
	for _, p := range ps {
		_, hwm, err := procMem(p.pid())
		if err != nil {
			return 0, err
		}
		peak = max(peak, hwm)
	}
	return peak, nil
}

// clients returns one client per consumer, spread evenly over the
// sidecars' sockets (consumer i uses sidecar i mod len(ps)); each has its
// own connection, as a worker process would.
func clients(ps []*sidecarProc, consumers int) []*client.Client {
	cs := make([]*client.Client, consumers)
	for i := range cs {
		cs[i] = client.New(ps[i%len(ps)].socket)
	}
	return cs
}

func closeClients(cs []*client.Client) {
	for _, c := range cs {
		c.Close()
	}
}
