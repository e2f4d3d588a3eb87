package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// runner holds what every measurement of one run shares.
type runner struct {
	cfg  Config
	meta *clientv3.Client // sees the run's whole prefix
	dir  string           // sockets
}

// Run measures every configured system at every consumer count, then the
// sidecar overhead and the queue depth, and returns the report. Each
// measurement works under its own key prefix below cfg.Etcd.Namespace and
// deletes it afterwards. Cancelling ctx stops the run (sidecar processes
// are stopped and the keys deleted) and returns ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.validateRun(); err != nil {
		return nil, err
	}
	meta, err := etcdconn.New(cfg.Etcd)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	defer meta.Close()
	if err := etcdconn.Ping(ctx, meta, cfg.Etcd.Endpoints, 10*time.Second); err != nil {
		return nil, err
	}
	// sun_path holds about 108 bytes: keep the sockets' directory short.
	dir, err := os.MkdirTemp("", "bb")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &runner{cfg: cfg, meta: meta, dir: dir}
	rep := &Report{Started: time.Now(), Machine: r.machine(ctx), Settings: settingsOf(cfg)}
	rep.LoadStart = loadAvg()
	defer func() { r.cleanup(context.Background(), "") }()

	if !cfg.SkipFleet {
		for _, n := range cfg.Fleet {
			fmt.Fprintf(cfg.Progress, "fleet of %d sidecars...\n", n)
			res, err := r.fleetSweep(ctx, n)
			if err != nil {
				return nil, failed(ctx, fmt.Sprintf("fleet of %d sidecars", n), err)
			}
			fmt.Fprintf(cfg.Progress, "  %.0f tasks/s, %.2f etcd txns/task, %.1f watch events/task, dispatch p50 %.1f ms\n",
				res.TasksPerS, res.Drain.TxnsPerTask, res.Drain.WatchEventsPerTask, res.DispatchP50MS)
			rep.Fleet = append(rep.Fleet, res)
		}
	}
	if !cfg.SkipAffinity {
		fmt.Fprintf(cfg.Progress, "affinity: %d speakers, %d sidecars...\n", AffinitySpeakers, AffinitySidecars)
		res, err := r.affinity(ctx)
		if err != nil {
			return nil, failed(ctx, "affinity", err)
		}
		fmt.Fprintf(cfg.Progress, "  hit share %.2f (without keys %.2f), %.0f tasks/s (without keys %.0f)\n",
			res.HitShare, res.HitShareWithout, res.TasksPerS, res.TasksPerSWithout)
		rep.Affinity = &res
	}
	if cfg.compares() {
		if err := r.compare(ctx, rep); err != nil {
			return nil, err
		}
	}
	rep.LoadEnd = loadAvg()
	rep.Finished = time.Now()
	rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	rep.derive()
	return rep, nil
}

// compare measures every configured system at every consumer count, then
// the sidecar overhead and the queue depth.
func (r *runner) compare(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	var err error
	for _, n := range cfg.Consumers {
		for _, sys := range Systems {
			if !cfg.has(sys) {
				continue
			}
			fmt.Fprintf(cfg.Progress, "%s with %d consumers...\n", sys, n)
			res, err := r.measure(ctx, sys, n)
			if err != nil {
				return failed(ctx, fmt.Sprintf("%s with %d consumers", sys, n), err)
			}
			fmt.Fprintf(cfg.Progress, "  %.0f tasks/s, %.3f conflicts/task\n", res.TasksPerS, res.ConflictsPerTask)
			rep.Results = append(rep.Results, res)
		}
	}
	if !cfg.SkipOverhead {
		fmt.Fprintln(cfg.Progress, "sidecar overhead...")
		if rep.Overhead, err = r.overhead(ctx); err != nil {
			return failed(ctx, "overhead", err)
		}
	}
	if !cfg.SkipDepth {
		for _, d := range cfg.Depths {
			fmt.Fprintf(cfg.Progress, "claim cost with %d pending tasks...\n", d)
			res, err := r.depth(ctx, d)
			if err != nil {
				return failed(ctx, fmt.Sprintf("depth %d", d), err)
			}
			rep.Depth = append(rep.Depth, res)
		}
	}
	return nil
}

// failed names the measurement that failed, and says so plainly when it
// was interrupted (ctx ended) rather than failing by itself.
func failed(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted during %s: %w", what, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (r *runner) measure(ctx context.Context, sys string, consumers int) (Result, error) {
	defer r.cleanup(context.Background(), pointName(sys, consumers))
	switch sys {
	case SystemCeiling:
		return r.ceiling(ctx, consumers)
	case SystemRecipes:
		return r.recipes(ctx, consumers)
	case SystemNaive:
		return r.naive(ctx, consumers)
	default:
		return r.baton(ctx, consumers)
	}
}

func pointName(sys string, consumers int) string { return fmt.Sprintf("%s-c%d", sys, consumers) }

// ns returns the namespace of one measurement.
//
// Measurements' namespaces sit beside the run's, not inside it
// ("bt.bench.<time>.baton-c8.drain"): a namespace is one name without
// "/" (the --namespace flag refuses nested ones), so that no deployment
// lies inside another's key prefix.
func (r *runner) ns(name string) string {
	return strings.TrimSuffix(r.cfg.Etcd.Namespace, "/") + "." + strings.ReplaceAll(name, "/", ".")
}

// conns is how many etcd connections (for baton: sidecars) serve n
// consumers.
func (r *runner) conns(consumers int) int { return min(consumers, r.cfg.Sidecars) }

// clients returns n etcd clients in the measurement's namespace, each
// counting its failed transactions into failed.
func (r *runner) clients(name string, n int, failed *atomic.Int64) ([]*clientv3.Client, error) {
	ec := r.cfg.Etcd
	ec.Namespace = r.ns(name)
	cs := make([]*clientv3.Client, 0, n)
	for range n {
		c, err := etcdconn.New(ec)
		if err != nil {
			closeEtcd(cs)
			return nil, fmt.Errorf("etcd: %w", err)
		}
		c.KV = countingKV{KV: c.KV, failed: failed}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeEtcd(cs []*clientv3.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// mark is a point in a measurement: etcd's revision (the count of write
// transactions so far) and the CPU time this process has used.
type mark struct {
	rev int64
	cpu time.Duration
}

func (r *runner) mark(ctx context.Context) (mark, error) {
	resp, err := r.meta.Get(ctx, "rev", clientv3.WithCountOnly())
	if err != nil {
		return mark{}, err
	}
	cpu, err := procCPU(os.Getpid())
	if err != nil {
		return mark{}, err
	}
	return mark{rev: resp.Header.Revision, cpu: cpu}, nil
}

// cleanup deletes the keys of one measurement ("" for the whole run) and,
// for an embedded etcd, compacts etcd's history.
func (r *runner) cleanup(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The measurements' namespaces are beside the run's (see ns): delete
	// them through a KV that sees the whole keyspace.
	// A namespace N holds the keys under "N/"; its measurements' are
	// under "N.<name>/" (and "N.<name>.<part>/").
	raw := clientv3.NewKV(r.meta)
	base := r.ns(name)
	if name == "" {
		base = strings.TrimSuffix(r.cfg.Etcd.Namespace, "/")
	}
	if _, err := raw.Delete(ctx, base+"/", clientv3.WithPrefix()); err != nil {
		fmt.Fprintf(r.cfg.Progress, "warning: deleting the keys of %s: %v\n", name, err)
		return
	}
	resp, err := raw.Delete(ctx, base+".", clientv3.WithPrefix())
	if err != nil {
		fmt.Fprintf(r.cfg.Progress, "warning: deleting the keys of %s: %v\n", name, err)
		return
	}
	if r.cfg.Embedded {
		_, err := r.meta.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
		if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			fmt.Fprintf(r.cfg.Progress, "warning: compacting etcd: %v\n", err)
		}
	}
}

// counts are what one throughput measurement observed.
type counts struct {
	began, end            time.Time
	delivered, duplicates int
	conflicts             int64
	revs                  int64         // etcd revisions during the measurement
	cpu                   time.Duration // CPU time of this process during it
	lat                   latencies
}

// result turns counts into a Result.
func (r *runner) result(sys string, consumers, tasks int, c counts) (Result, error) {
	res := Result{
		System: sys, Consumers: consumers, Tasks: tasks,
		Delivered: c.delivered, Duplicates: c.duplicates, Conflicts: c.conflicts, Load1: loadAvg()[0],
	}
	if c.end.IsZero() || c.delivered != tasks {
		return res, fmt.Errorf("%d of %d tasks delivered", c.delivered, tasks)
	}
	secs := c.end.Sub(c.began).Seconds()
	res.Seconds = round(secs, 3)
	res.TasksPerS = round(float64(c.delivered)/secs, 1)
	res.ConflictsPerTask = round(float64(c.conflicts)/float64(c.delivered), 4)
	res.ClaimP50MS = round(c.lat.quantile(0.50), 3)
	res.ClaimP99MS = round(c.lat.quantile(0.99), 3)
	res.EtcdWritesPerS = round(float64(c.revs)/secs, 1)
	res.EtcdWritesPerTask = round(float64(c.revs)/float64(c.delivered), 3)
	res.BenchCPUMSPerTask = round(ms(c.cpu)/float64(c.delivered), 3)
	return res, nil
}

func (r *runner) machine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if h, err := os.Hostname(); err == nil {
		m.Host = h
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := r.meta.Status(sctx, r.cfg.Etcd.Endpoints[0]); err == nil {
		m.Etcd = st.Version
	}
	m.EtcdEndpoints = r.cfg.Etcd.Endpoints
	m.EmbeddedEtcd = r.cfg.Embedded
	return m
}
