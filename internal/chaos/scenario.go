package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/internal/faultproxy"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config describes one run. Zero fields take the defaults in brackets.
type Config struct {
	// Seed chooses the task mix and the sequence of faults (kinds, targets,
	// gaps). The interleaving of processes is not reproducible; the
	// sequence of faults is.
	Seed int64
	// Exe starts this binary again in a role (see RunRole). Required.
	Exe childproc.Exe
	// Dir receives the processes' logs. Required.
	Dir        string
	Sidecars   int           // [8]
	WorkersPer int           // workers per sidecar [2]
	Tasks      int           // [200]
	Duration   time.Duration // how long faults go on [90s]
	TTL        time.Duration // the sidecars' lease TTL [3s]
	// Settle bounds the wait for every task to finish after the faults
	// end [120s].
	Settle time.Duration
	// Faults to draw from [AllFaults].
	Faults []string
	// Log receives progress lines [discard].
	Log io.Writer
}

func (c *Config) defaults() {
	if c.Sidecars == 0 {
		c.Sidecars = 8
	}
	if c.WorkersPer == 0 {
		c.WorkersPer = 2
	}
	if c.Tasks == 0 {
		c.Tasks = 200
	}
	if c.Duration == 0 {
		c.Duration = 90 * time.Second
	}
	if c.TTL == 0 {
		c.TTL = 3 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 120 * time.Second
	}
	if len(c.Faults) == 0 {
		c.Faults = AllFaults
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Result is what a run measured and what the checker found.
type Result struct {
	Seed        int64
	Submitted   int            // the task mix and the probes
	Probes      int            // probe tasks of the scheduler faults
	Final       map[string]int // tasks per final state
	Faults      []Fault
	Requeues    int // CLAIMED → PENDING without a Fail (loss or release)
	Retries     int // Fail on purpose → retried
	Duplicates  int // executions that wrote output beyond the first per task (failures on purpose excluded)
	Refused     int // Completes refused (FAILED_PRECONDITION)
	Cancels     int // Cancel calls made (on a third of the submit waves)
	StaleWrites int // writes the fenced store refused
	Ops         int
	// Locks: holdings of the chaos lock, and those lost with their lease
	// or their process (their end unknown).
	LockHolds, LockLost int
	// Config: writes the harness made, deliveries to watchers.
	ConfigWrites, ConfigDeliveries int
	Report                         Report
	Elapsed                        time.Duration
}

// Failed reports whether the run broke an invariant.
func (r *Result) Failed() bool { return len(r.Report.Violations) > 0 }

type run struct {
	cfg     Config
	rng     *rand.Rand
	cluster *Cluster
	store   *FencedStore
	kv      *clientv3.Client // namespaced
	qs      *workqueue.Store

	mu        sync.Mutex
	ops       []Op
	pending   map[[4]string]int // (worker, kind, task, token) → index of an unanswered call
	holding   map[string]Op     // worker → claim in hand
	states    []stateEvent
	sidecars  []*sidecarSlot
	cancels   int      // Cancel calls that succeeded
	cancelled []string // tasks Cancel ended at once
	probes    []string // probe tasks submitted by scheduler faults
	gen       int

	locks        []LockHold
	lockIdx      map[string]int // holder/token → index in locks
	configSeen   []ConfigSeen
	configWrites int
}

type sidecarSlot struct {
	name, socket string
	link         *faultproxy.Link
	proc         *childproc.Process
	workers      []*childproc.Process
	// startRev: etcd's revision just before proc started; an election key
	// created before it belongs to an earlier process of the slot.
	startRev int64
}

// Run runs one scenario: a three-member cluster, Sidecars sidecars each
// behind its own proxies, WorkersPer workers each, Tasks tasks submitted
// over the first half of Duration, faults drawn from Faults until Duration
// ends; then it heals everything, waits for every task to finish, and
// checks the history.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if cfg.Exe.Path == "" || cfg.Dir == "" {
		return nil, errors.New("chaos: Exe and Dir are required")
	}
	start := time.Now()
	r := &run{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6261746f6e)), pending: map[[4]string]int{}, holding: map[string]Op{}, lockIdx: map[string]int{}}
	res := &Result{Seed: cfg.Seed, Final: map[string]int{}}
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "%6.1fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}

	var err error
	if r.store, err = StartFencedStore(); err != nil {
		return nil, err
	}
	defer r.store.Close()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	r.cluster, err = StartCluster(sctx, cfg.Exe, cfg.Dir, 3)
	cancel()
	if err != nil {
		return nil, err
	}
	defer r.cluster.Close()
	if _, err := r.waitLeader(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	logf("etcd cluster up: %s", strings.Join(r.cluster.Endpoints(), " "))
	// The sidecars' namespace (their --namespace chaos), through the client
	// every Baton command builds.
	r.kv, err = etcdconn.New(etcdconn.Config{Endpoints: r.cluster.Endpoints(), Namespace: "chaos", DialTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	defer r.kv.Close()
	qs, err := workqueue.NewStore(r.kv.KV, workqueue.Config{})
	if err != nil {
		return nil, err
	}
	r.qs = qs

	// Follow every task's state for recovery times and requeue counts.
	wctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); r.watchStates(wctx) }()
	defer func() { stopWatch(); <-watchDone }()

	for i := range cfg.Sidecars {
		link, err := faultproxy.NewLink(r.cluster.Endpoints())
		if err != nil {
			return nil, err
		}
		defer link.Close()
		sock := filepath.Join(cfg.Dir, fmt.Sprintf("s%d.sock", i))
		s := &sidecarSlot{name: fmt.Sprintf("s%d", i), socket: sock, link: link}
		r.sidecars = append(r.sidecars, s)
		if err := r.startSidecar(s); err != nil {
			return nil, err
		}
		for range cfg.WorkersPer {
			if err := r.startWorker(s, len(s.workers)); err != nil {
				return nil, err
			}
		}
	}
	defer r.stopAll()
	logf("%d sidecars, %d workers each, ttl %v", cfg.Sidecars, cfg.WorkersPer, cfg.TTL)

	// Submit over the first three quarters of the fault period, in waves.
	specs := r.taskMix()
	subDone := make(chan []string, 1)
	sub, stopSub := context.WithCancel(ctx)
	defer stopSub()
	go func() { subDone <- r.submit(sub, qs, specs, cfg.Duration*3/4) }()

	// The config document changes all through the fault period.
	cs := configdoc.NewStore(r.kv.KV, nil, configdoc.Config{})
	cfgCtx, stopConfig := context.WithCancel(ctx)
	defer stopConfig()
	cfgDone := make(chan struct{})
	go func() { defer close(cfgDone); r.writeConfig(cfgCtx, cs) }()

	// Faults until Duration ends.
	end := time.Now().Add(cfg.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		gap := time.Duration(500+r.rng.IntN(2000)) * time.Millisecond
		if !sleepCtx(ctx, gap) {
			break
		}
		kind := r.drawFault()
		f, err := r.inject(ctx, kind)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		logf("fault %-18s %-6s stranded %d %v survived %d recovery %v", f.Kind, f.Target, f.Stranded, f.Tasks, f.Survived, f.Recovery.Round(time.Millisecond))
		switch {
		case f.NoScheduler:
			logf("  NO SCHEDULER: no live sidecar was elected for ttl+30s")
		case isSchedulerFault(f.Kind):
			logf("  scheduler %s -> %s elected after %v; probe %s claimed after %v", f.Target, f.NewScheduler,
				f.Elected.Round(time.Millisecond), f.Probe, f.Dispatch.Round(time.Millisecond))
		}
		if len(f.Unrecovered) > 0 {
			logf("  not back within ttl+30s: %v", f.Unrecovered)
		}
		res.Faults = append(res.Faults, f)
	}
	stopConfig()
	<-cfgDone
	submitted := <-subDone
	r.mu.Lock()
	res.Probes = len(r.probes)
	submitted = append(submitted, r.probes...)
	r.mu.Unlock()
	res.Submitted = len(submitted)
	logf("faults over; %d tasks submitted; waiting for all to finish", len(submitted))

	// Wait for every task to finish.
	final, err := r.awaitFinished(ctx, submitted, cfg.Settle)
	if err != nil {
		return nil, err
	}
	configFinal, configLive := r.finalConfig(ctx, cs, 20*time.Second)
	r.stopAll()
	stopWatch()
	<-watchDone

	r.mu.Lock()
	cancelled := append([]string(nil), r.cancelled...)
	res.Cancels = r.cancels
	r.mu.Unlock()
	r.mu.Lock()
	seen := append([]ConfigSeen(nil), r.configSeen...)
	res.ConfigWrites = r.configWrites
	r.mu.Unlock()
	h := History{Submitted: submitted, Cancelled: cancelled, Final: final, Ops: r.history(), Writes: r.store.Writes(),
		Locks: r.lockHolds(), Config: seen, ConfigFinal: configFinal, ConfigLive: configLive}
	res.Report = Check(h, 30*time.Second)
	r.dump(h, res.Faults)
	r.tally(res, h)
	res.Elapsed = time.Since(start)
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *run) startSidecar(s *sidecarSlot) error {
	rev := r.currentRev(context.Background())
	env := []string{"CHAOS_ENDPOINTS=" + strings.Join(s.link.Endpoints(), ","), "CHAOS_NAMESPACE=chaos",
		"CHAOS_SOCKET=" + s.socket, "CHAOS_TTL=" + r.cfg.TTL.String()}
	p, err := startProcess(context.Background(), r.cfg.Exe, s.name, "sidecar", filepath.Join(r.cfg.Dir, s.name+".log"), env, nil, "")
	if err != nil {
		return err
	}
	r.mu.Lock()
	s.proc, s.startRev = p, rev
	r.mu.Unlock()
	return nil
}

// startWorker starts (or replaces) worker slot i of sidecar s.
func (r *run) startWorker(s *sidecarSlot, i int) error {
	r.mu.Lock()
	r.gen++
	name := fmt.Sprintf("%sw%dg%d", s.name, i, r.gen)
	r.mu.Unlock()
	env := []string{"CHAOS_SOCKET=" + s.socket, "CHAOS_STORE=" + r.store.Addr()}
	p, err := startProcess(context.Background(), r.cfg.Exe, name, "worker", filepath.Join(r.cfg.Dir, s.name+"-workers.log"), env, r.onOp, "")
	if err != nil {
		return err
	}
	r.mu.Lock()
	if i < len(s.workers) {
		s.workers[i] = p
	} else {
		s.workers = append(s.workers, p)
	}
	r.mu.Unlock()
	return nil
}

// stopAll kills every sidecar and worker.
func (r *run) stopAll() {
	r.mu.Lock()
	var procs []*childproc.Process
	for _, s := range r.sidecars {
		if s.proc != nil {
			procs = append(procs, s.proc)
		}
		procs = append(procs, s.workers...)
	}
	r.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
}

// DirFor makes a run directory under the system's temp dir.
func DirFor(seed int64) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("baton-chaos-%d-", seed))
}
