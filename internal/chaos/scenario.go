package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/faultproxy"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
)

// Queue is the queue every chaos task goes to.
const Queue = "chaos"

// Fault kinds.
const (
	WorkerKill       = "worker-kill"
	SidecarKill      = "sidecar-kill"
	SidecarPause     = "sidecar-pause" // SIGSTOP past the TTL, then SIGCONT
	SidecarPartition = "sidecar-partition"
	LinkDelay        = "link-delay"
	LeaderKill       = "etcd-leader-kill"
	FollowerKill     = "etcd-follower-kill"
	LeaderPause      = "etcd-leader-pause"
	// WorkerKillElection kills a worker while the etcd leader is paused,
	// so its sidecar cannot return the claim at once.
	WorkerKillElection = "worker-kill-in-election"
	// The scheduler faults find the sidecar elected as the fleet's
	// scheduler and kill it (restarted 0.5s later), pause it past the TTL
	// or cut it off past the TTL (scheduler.go).
	SchedulerKill      = "scheduler-kill"
	SchedulerPause     = "scheduler-pause"
	SchedulerPartition = "scheduler-partition"
)

// AllFaults is every fault kind, in the order the summary lists them.
var AllFaults = []string{WorkerKill, SidecarKill, SidecarPause, SidecarPartition, LinkDelay, LeaderKill, FollowerKill, LeaderPause, WorkerKillElection, SchedulerKill, SchedulerPause, SchedulerPartition}

// Config describes one run. Zero fields take the defaults in brackets.
type Config struct {
	// Seed chooses the task mix and the sequence of faults (kinds, targets,
	// gaps). The interleaving of processes is not reproducible; the
	// sequence of faults is.
	Seed int64
	// Exe starts this binary again in a role (see RunRole). Required.
	Exe Exe
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

// Fault is one injected fault. Recovery is how long after it the system
// was whole again: for faults that strand claimed tasks, until the last
// stranded task was back in the queue (PENDING, or DEAD on its last
// attempt); for etcd faults, until a write through the cluster succeeded
// again. Zero when there was nothing to recover.
type Fault struct {
	Kind   string
	Target string
	At     time.Time
	// Stranded counts the claims in hand that the fault cut off and that
	// came back to the queue (Tasks); Survived the claims in hand that
	// their workers still finished (a sidecar restarted before its old
	// lease expired); Unrecovered the tasks that had not come back within
	// TTL+30s.
	Stranded    int
	Tasks       []string
	Survived    int
	Unrecovered []string
	// Recoveries holds each stranded claim's time back to the queue;
	// Recovery is the largest (for etcd faults, the time to the first
	// write).
	Recoveries []time.Duration
	Recovery   time.Duration
	// Scheduler faults: Elected is the time from the fault until another
	// sidecar's election key led (NewScheduler, its worker id); Dispatch
	// the time until Probe, a task submitted right after the fault, was
	// claimed. Zero when not seen within TTL+30s. NoScheduler: no live
	// sidecar was the scheduler for TTL+30s, so nothing was injected.
	Elected      time.Duration
	NewScheduler string
	Probe        string
	Dispatch     time.Duration
	NoScheduler  bool
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

type stateEvent struct {
	task  string
	state string
	at    time.Time
}

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
	proc         *process
	workers      []*process
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
	r.kv, err = clientv3.New(clientv3.Config{Endpoints: r.cluster.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer r.kv.Close()
	const ns = "chaos/" // the sidecars' --namespace chaos
	r.kv.KV, r.kv.Watcher = namespace.NewKV(r.kv.KV, ns), namespace.NewWatcher(r.kv.Watcher, ns)
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

// taskMix: fake work of 200ms–2s; one task in five fails its first attempt
// on purpose; one in twenty fails every attempt and ends DEAD.
func (r *run) taskMix() []workqueue.Spec {
	var specs []workqueue.Spec
	for i := range r.cfg.Tasks {
		p := Payload{ID: fmt.Sprintf("t%04d", i), WorkMS: 200 + r.rng.IntN(1800)}
		switch n := r.rng.IntN(20); {
		case n == 0:
			p.FailAttempts = 99
		case n < 5:
			p.FailAttempts = 1
		}
		b, _ := json.Marshal(p)
		specs = append(specs, workqueue.Spec{ID: p.ID, Queue: Queue, Payload: b, MaxAttempts: 4})
	}
	return specs
}

// submit writes specs in waves of 10 spread over period, retrying a wave
// until etcd takes it (submits are idempotent). It returns the ids
// written.
func (r *run) submit(ctx context.Context, qs *workqueue.Store, specs []workqueue.Spec, period time.Duration) []string {
	var ids []string
	// Its own stream: the fault loop draws from r.rng concurrently.
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), 0x63616e63656c))
	waves := (len(specs) + 9) / 10
	gap := period / time.Duration(waves)
	for i := 0; i < len(specs); i += 10 {
		wave := specs[i:min(i+10, len(specs))]
		for ctx.Err() == nil {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := qs.Submit(sctx, wave)
			cancel()
			if err == nil {
				for _, s := range wave {
					ids = append(ids, s.ID)
				}
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
		if !sleepCtx(ctx, gap) {
			break
		}
		// Cancel a task of this wave now and then: pending ones end
		// CANCELLED at once, claimed ones when their worker gives up.
		if rng.IntN(3) == 0 {
			id := wave[rng.IntN(len(wave))].ID
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := qs.Cancel(cctx, id)
			cancel()
			if err == nil {
				r.mu.Lock()
				r.cancels++
				if res.State == workqueue.StateCancelled {
					r.cancelled = append(r.cancelled, id)
				}
				r.mu.Unlock()
			}
		}
	}
	return ids
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

// onOp records a worker's Op line (or its lock or config line).
func (r *run) onOp(line string) {
	var op Op
	if err := json.Unmarshal([]byte(line), &op); err != nil {
		return
	}
	switch {
	case op.Lock != nil:
		r.onLock(*op.Lock)
		return
	case op.Config != nil:
		r.mu.Lock()
		r.configSeen = append(r.configSeen, *op.Config)
		r.mu.Unlock()
		return
	case op.Kind == "":
		return
	}
	key := [4]string{op.Worker, op.Kind, op.Task, fmt.Sprint(op.Token)}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case op.Kind == OpClaim:
		r.ops = append(r.ops, op)
		r.holding[op.Worker] = op
	case op.Return == 0:
		r.pending[key] = len(r.ops)
		r.ops = append(r.ops, op)
		if op.Kind != OpHeartbeat {
			delete(r.holding, op.Worker) // answering: no longer a stranded claim
		}
	default:
		if i, ok := r.pending[key]; ok {
			r.ops[i] = op
			delete(r.pending, key)
		} else {
			r.ops = append(r.ops, op)
		}
		if op.Kind != OpHeartbeat || op.Outcome == Rejected {
			delete(r.holding, op.Worker)
		}
	}
}

// onLock records a lock holding: its first line when Lock returned, its
// second when the holder let go.
func (r *run) onLock(h LockHold) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := h.Holder + "/" + fmt.Sprint(h.Token)
	if i, ok := r.lockIdx[k]; ok {
		r.locks[i] = h
		return
	}
	r.lockIdx[k] = len(r.locks)
	r.locks = append(r.locks, h)
}

// lockHolds returns the holdings; one whose holder never said it let go
// (killed while holding) has an unknown end.
func (r *run) lockHolds() []LockHold {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]LockHold(nil), r.locks...)
	for i := range out {
		if out[i].Released.IsZero() {
			out[i].Lost = true
		}
	}
	return out
}

// writeConfig changes the config document every 250ms until ctx ends,
// ignoring failures (etcd faults), and returns the revision of its last
// successful write.
func (r *run) writeConfig(ctx context.Context, cs *configdoc.Store) int64 {
	var last int64
	for n := 0; ctx.Err() == nil; n++ {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cs.Set(wctx, ConfigName, fmt.Appendf(nil, `{"seq":%d,"sample_rate":24000}`, n))
		cancel()
		if err == nil {
			last = d.Revision
			r.mu.Lock()
			r.configWrites++
			r.mu.Unlock()
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	return last
}

// finalConfig writes the config once more after the faults (retrying until
// etcd takes it) and waits up to limit for every live worker to have seen
// it. It returns the final revision and the live workers.
func (r *run) finalConfig(ctx context.Context, cs *configdoc.Store, limit time.Duration) (int64, []string) {
	deadline := time.Now().Add(limit)
	var final int64
	for final == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cs.Set(wctx, ConfigName, []byte(`{"seq":"final","sample_rate":24000}`))
		cancel()
		if err == nil {
			final = d.Revision
		} else {
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
	var live []string
	r.mu.Lock()
	for _, s := range r.sidecars {
		for _, w := range s.workers {
			live = append(live, w.name)
		}
	}
	r.mu.Unlock()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		seen := map[string]int64{}
		r.mu.Lock()
		for _, c := range r.configSeen {
			seen[c.Watcher] = max(seen[c.Watcher], c.Revision)
		}
		r.mu.Unlock()
		all := true
		for _, w := range live {
			all = all && seen[w] >= final
		}
		if all {
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return final, live
}

// history returns the ops; calls never answered are of unknown outcome.
func (r *run) history() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Op(nil), r.ops...)
	for _, i := range r.pending {
		out[i].Outcome = Unknown
	}
	return out
}

// stranded lists the claims in hand of the given workers that are still
// the task's current claim: a worker stuck in a call through a cut-off
// sidecar may hold a claim that an earlier fault already returned and
// another worker took or finished.
func (r *run) stranded(workers []*process) []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Op
	for _, w := range workers {
		op, ok := r.holding[w.name]
		if !ok {
			continue
		}
		current := true
		for _, o := range r.ops {
			if o.Task == op.Task && o.Kind == OpClaim && o.Token > op.Token {
				current = false
			}
		}
		for i := len(r.states) - 1; i >= 0; i-- {
			if e := r.states[i]; e.task == op.Task {
				current = current && e.state == "CLAIMED"
				break
			}
		}
		if current {
			out = append(out, op)
		}
	}
	return out
}

func (r *run) watchStates(ctx context.Context) {
	const prefix = "state/"
	var rev int64 // last revision seen: a new watch resumes after it
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		for resp := range r.kv.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...) {
			now := time.Now()
			r.mu.Lock()
			for _, ev := range resp.Events {
				var st struct{ State string }
				if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &st) == nil {
					r.states = append(r.states, stateEvent{task: strings.TrimPrefix(string(ev.Kv.Key), prefix), state: st.State, at: now})
				}
				rev = max(rev, ev.Kv.ModRevision)
			}
			r.mu.Unlock()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// settled returns the first state task took after t other than CLAIMED,
// and when. A claim in hand when a fault struck ends either by recovery
// (PENDING, or DEAD on its last attempt) or, when the claim outlived the
// fault (a sidecar restarted before its old lease expired), by its worker
// finishing it (DONE, FAILED).
func (r *run) settled(task string, t time.Time) (string, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.states {
		if e.task == task && e.at.After(t) && e.state != "CLAIMED" {
			return e.state, e.at, true
		}
	}
	return "", time.Time{}, false
}

// waitLeader polls until a member says it leads.
func (r *run) waitLeader(ctx context.Context, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		i, err := r.cluster.Leader(ctx)
		if err == nil {
			return i, nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return -1, err
		}
	}
}

// probe writes through the cluster until a write succeeds; it returns
// how long after since that was.
func (r *run) probe(ctx context.Context, since time.Time, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := r.cluster.Client.Put(pctx, "chaos-probe", since.String())
		cancel()
		if err == nil {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return 0, fmt.Errorf("cluster took no write for %v: %w", limit, err)
		}
	}
}

func (r *run) inject(ctx context.Context, kind string) (Fault, error) {
	f := Fault{Kind: kind, At: time.Now()}
	ttlPlus := r.cfg.TTL + 2*time.Second
	s := r.sidecars[r.rng.IntN(len(r.sidecars))]
	var stranded []Op
	switch kind {
	case WorkerKill:
		i := r.rng.IntN(len(s.workers))
		r.mu.Lock()
		w := s.workers[i]
		r.mu.Unlock()
		f.Target = w.name
		stranded = r.stranded([]*process{w})
		f.At = time.Now()
		w.kill()
		if err := r.startWorker(s, i); err != nil {
			return f, err
		}
	case SidecarKill:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		s.proc.kill()
		sleepCtx(ctx, 500*time.Millisecond)
		if err := r.startSidecar(s); err != nil {
			return f, err
		}
	case SidecarPause:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		if err := s.proc.signal(syscall.SIGSTOP); err != nil {
			return f, err
		}
		sleepCtx(ctx, ttlPlus)
		if err := s.proc.signal(syscall.SIGCONT); err != nil {
			return f, err
		}
	case SidecarPartition:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		s.link.Partition()
		sleepCtx(ctx, ttlPlus)
		s.link.Heal()
	case SchedulerKill, SchedulerPause, SchedulerPartition:
		var err error
		if stranded, err = r.injectScheduler(ctx, &f, r.qs); err != nil {
			return f, err
		}
	case LinkDelay:
		f.Target = s.name
		s.link.Delay(150*time.Millisecond, 100*time.Millisecond)
		sleepCtx(ctx, 3*time.Second)
		s.link.Undelay()
	case WorkerKillElection:
		leader, err := r.waitLeader(ctx, 30*time.Second)
		if err != nil {
			return f, err
		}
		i := r.rng.IntN(len(s.workers))
		r.mu.Lock()
		w := s.workers[i]
		r.mu.Unlock()
		f.Target = fmt.Sprintf("%s+m%d", w.name, leader)
		stranded = r.stranded([]*process{w})
		f.At = time.Now()
		if err := r.cluster.Pause(leader); err != nil {
			return f, err
		}
		w.kill()
		if err := r.startWorker(s, i); err != nil {
			return f, err
		}
		if _, err := r.probe(ctx, f.At, 60*time.Second); err != nil {
			return f, err
		}
		if err := r.cluster.Resume(leader); err != nil {
			return f, err
		}
	case LeaderKill, FollowerKill, LeaderPause:
		leader, err := r.waitLeader(ctx, 30*time.Second)
		if err != nil {
			return f, err
		}
		m := leader
		if kind == FollowerKill {
			m = (leader + 1 + r.rng.IntN(r.cluster.Size()-1)) % r.cluster.Size()
		}
		f.Target = fmt.Sprintf("m%d", m)
		f.At = time.Now()
		if kind == LeaderPause {
			if err := r.cluster.Pause(m); err != nil {
				return f, err
			}
		} else {
			r.cluster.Kill(m)
		}
		d, err := r.probe(ctx, f.At, 60*time.Second)
		if err != nil {
			return f, err
		}
		f.Recovery = d
		sleepCtx(ctx, time.Second)
		if kind == LeaderPause {
			err = r.cluster.Resume(m)
		} else {
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			err = r.cluster.Restart(rctx, m)
			cancel()
		}
		if err != nil {
			return f, err
		}
		return f, nil
	default:
		return f, fmt.Errorf("unknown fault kind %q", kind)
	}
	// Stranded claims must come back: wait (bounded) and take the last.
	deadline := time.Now().Add(r.cfg.TTL + 30*time.Second)
	for _, op := range stranded {
		for {
			if state, at, ok := r.settled(op.Task, f.At); ok {
				if state == "PENDING" || state == "DEAD" {
					f.Stranded++
					f.Tasks = append(f.Tasks, op.Task)
					f.Recoveries = append(f.Recoveries, at.Sub(f.At))
					f.Recovery = max(f.Recovery, at.Sub(f.At))
				} else {
					f.Survived++
				}
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
				f.Unrecovered = append(f.Unrecovered, op.Task) // the checker will say whether it was lost
				break
			}
		}
	}
	return f, nil
}

// awaitFinished polls the tasks' states until all are finished or limit
// passes; it returns the last states read.
func (r *run) awaitFinished(ctx context.Context, ids []string, limit time.Duration) (map[string]string, error) {
	deadline := time.Now().Add(limit)
	for {
		final := map[string]string{}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := r.kv.Get(rctx, "state/", clientv3.WithPrefix())
		cancel()
		done := err == nil
		if err == nil {
			for _, kv := range resp.Kvs {
				var st struct{ State string }
				if json.Unmarshal(kv.Value, &st) == nil {
					final[strings.TrimPrefix(string(kv.Key), "state/")] = st.State
				}
			}
			for _, id := range ids {
				if !workqueue.State(final[id]).Finished() {
					done = false
				}
			}
		}
		if done || time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return final, nil
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// stopAll kills every sidecar and worker.
func (r *run) stopAll() {
	r.mu.Lock()
	var procs []*process
	for _, s := range r.sidecars {
		if s.proc != nil {
			procs = append(procs, s.proc)
		}
		procs = append(procs, s.workers...)
	}
	r.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

func (r *run) tally(res *Result, h History) {
	for _, id := range h.Submitted {
		res.Final[h.Final[id]]++
	}
	last := map[string]string{}
	for _, e := range r.states {
		if e.state == "PENDING" && last[e.task] == "CLAIMED" {
			res.Requeues++
		}
		if e.state == "FAILED" {
			res.Retries++
		}
		last[e.task] = e.state
	}
	// A duplicate execution is work done under a claim that was then lost
	// while another claim of the task also did work; attempts that failed
	// on purpose are retries, not duplicates.
	failed := map[string]map[int64]bool{}
	for _, op := range h.Ops {
		if op.Kind == OpFail && op.Outcome == OK {
			if failed[op.Task] == nil {
				failed[op.Task] = map[int64]bool{}
			}
			failed[op.Task][op.Token] = true
		}
	}
	outputs := map[string]map[int64]bool{}
	for _, w := range h.Writes {
		if w.Kind == "output" && !failed[w.Task][w.Token] {
			if outputs[w.Task] == nil {
				outputs[w.Task] = map[int64]bool{}
			}
			outputs[w.Task][w.Token] = true
		}
		if !w.Accepted {
			res.StaleWrites++
		}
	}
	for _, toks := range outputs {
		res.Duplicates += len(toks) - 1
	}
	for _, op := range h.Ops {
		if op.Kind == OpComplete && op.Outcome == Rejected {
			res.Refused++
		}
	}
	res.Ops = len(h.Ops)
	res.LockHolds = len(h.Locks)
	for _, l := range h.Locks {
		if l.Lost {
			res.LockLost++
		}
	}
	res.ConfigDeliveries = len(h.Config)
}

// DirFor makes a run directory under the system's temp dir.
func DirFor(seed int64) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("baton-chaos-%d-", seed))
}

// dump writes the history, the state events and the faults to
// history.json in the run directory, for a failing seed's post-mortem.
func (r *run) dump(h History, faults []Fault) {
	type state struct {
		Task, State string
		At          time.Time
	}
	var states []state
	r.mu.Lock()
	for _, e := range r.states {
		states = append(states, state{e.task, e.state, e.at})
	}
	r.mu.Unlock()
	b, err := json.MarshalIndent(map[string]any{"history": h, "states": states, "faults": faults}, "", " ")
	if err == nil {
		_ = os.WriteFile(filepath.Join(r.cfg.Dir, "history.json"), b, 0o644)
	}
}
