package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/etcdconn"
)

// queue is the queue every bench sidecar serves.
const queue = "bench"

// sidecarProc is one `baton sidecar` process the bench started and owns.
// Its stderr (JSON logs) is read line by line by the child process's own
// goroutine (childproc).
type sidecarProc struct {
	name   string
	socket string
	proc   *childproc.Process

	mu      sync.Mutex
	stopped map[string]any // attributes of the "sidecar stopped" line
}

// startSidecars starts n sidecar processes in namespace ns and waits until
// all serve. On error it stops the ones it started.
func startSidecars(ctx context.Context, exe childproc.Exe, ec etcdconn.Config, ns, dir string, n int) ([]*sidecarProc, error) {
	ps := make([]*sidecarProc, 0, n)
	for i := range n {
		p, err := startSidecar(exe, ec, ns, dir, fmt.Sprintf("bench-%d", i))
		if err != nil {
			_ = stopSidecars(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range ps {
		if err := p.proc.WaitReady(rctx); err != nil {
			_ = stopSidecars(ps)
			return nil, err
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

// startSidecar starts one sidecar; it is ready at its "sidecar serving"
// log line.
func startSidecar(exe childproc.Exe, ec etcdconn.Config, ns, dir, name string) (*sidecarProc, error) {
	s := &sidecarProc{name: name, socket: filepath.Join(dir, name+".sock")}
	p, err := childproc.Start(childproc.Config{
		Name: "sidecar " + name,
		Exe:  exe,
		Args: []string{"--log-format", "json", "--log-level", "info",
			"sidecar", "--socket", s.socket, "--queue", queue, "--worker-id", name, "--grace", "1s",
			// Measured as deployed: metrics on, on a port of its own.
			"--admin-addr", "127.0.0.1:0"},
		Env:      etcdEnv(ec, ns),
		Ready:    func(line string) bool { return logMsg(line) == "sidecar serving" },
		ReadyOn:  childproc.Stderr,
		OnStderr: s.onLog,
	})
	if err != nil {
		return nil, err
	}
	s.proc = p
	return s, nil
}

// logMsg returns the msg of a JSON log line, or "".
func logMsg(line string) string {
	var rec struct{ Msg string }
	if json.Unmarshal([]byte(line), &rec) != nil {
		return ""
	}
	return rec.Msg
}

// onLog keeps the attributes of the "sidecar stopped" line.
func (p *sidecarProc) onLog(line string) {
	if logMsg(line) != "sidecar stopped" {
		return
	}
	var rec map[string]any
	if json.Unmarshal([]byte(line), &rec) == nil {
		p.mu.Lock()
		p.stopped = rec
		p.mu.Unlock()
	}
}

func (p *sidecarProc) pid() int { return p.proc.PID() }

// stop asks the sidecar to shut down (SIGTERM), waits up to 15s, then
// kills it. It returns an error if it had to kill it or it failed.
func (p *sidecarProc) stop() error { return p.proc.Stop(15 * time.Second) }

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
