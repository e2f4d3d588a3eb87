package workqueue

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
)

// Dispatcher is one sidecar's side of the work queue: it hands tasks to the
// sidecar's workers (Next), answers for the claims it made (Complete, Fail,
// Release, Heartbeat), and stands for election as the fleet's scheduler.
//
// It runs two goroutines between Start and Stop: the follower watches the
// sidecar's own wait keys (q/w/<lease>/) and hands each assignment to the
// Next call that waits for it; the candidate campaigns to be the
// scheduler and, while elected, runs it (scheduler.go).
type Dispatcher struct {
	store    *Store
	cfg      Config
	kv       clientv3.KV
	watcher  clientv3.Watcher
	lease    *coord.LeaseKeeper
	sessions *coord.Sessions
	worker   string
	labels   map[string]string
	tracer   trace.Tracer
	leading  atomic.Bool // written by the candidate goroutine

	mu        sync.Mutex
	held      map[string]*held
	waits     map[uint64]*localWait // Next calls waiting, by wait key sequence
	seq       uint64                // the last wait key sequence used
	taken     map[int64]bool        // tokens of assignments handed to a Next call
	affinity  map[string]string     // worker session ("" for none) → affinity key of its last task
	queues    []string              // queues followed for depth (Track)
	heldEmpty chan struct{}         // closed when held becomes empty while draining
	draining  bool
	drainCh   chan struct{}
	stopped   bool
	stopCh    chan struct{}   // closed by Stop: background retries end
	schedQs   map[string]bool // queues the scheduler has served this process, for depth samples
	stats     Stats

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	timerWG sync.WaitGroup
}

// MaxQueuesPerNext bounds the queues one Next may name: each is kept in
// the wait key and followed by the scheduler.
const MaxQueuesPerNext = 16

// claimTimeout bounds one claim transaction, so that a Next call reports
// etcd as unavailable instead of hanging.
const claimTimeout = 10 * time.Second

// Stats counts what the dispatcher did; read it with Stats.
type Stats struct {
	// Claims: tasks handed to this sidecar's workers.
	Claims int64
	// Conflicts: claim or assignment transactions of this sidecar that
	// failed their compare (another claimer won, the waiter left).
	Conflicts int64
	// Assigned: assignments this sidecar made as the scheduler.
	Assigned int64
	// Terms: times this sidecar was elected scheduler.
	Terms int64
	// Refused: answers (Complete, Fail, Release, Heartbeat) refused
	// because the claim they name is not live on this sidecar: not held
	// here (another sidecar's, an old one, or a guessed handle), or held
	// here but gone in etcd (the lease lapsed, the claim expired).
	Refused int64
	// Malformed: ready entries the scheduler skipped because their key
	// or value does not parse (each is logged).
	Malformed                            int64
	Requeued, Expired, Promoted, Removed int64
}

// localWait is one Next call waiting for an assignment.
type localWait struct {
	ch chan int64 // buffered 1: the token of the assignment
	id string     // the assigned task, once ch was sent to
	// poll: the wait key of a claim Next makes itself (poll.go): the
	// watch only records the claim's token in polled.
	poll   bool
	polled int64
}

// NewDispatcher returns a dispatcher for the sidecar named worker with
// labels (matched against tasks' Require). kv and watcher must be wrapped
// in the deployment's namespace.
func NewDispatcher(store *Store, kv clientv3.KV, watcher clientv3.Watcher, lease *coord.LeaseKeeper, sessions *coord.Sessions, worker string, labels map[string]string) *Dispatcher {
	return &Dispatcher{
		store: store, cfg: store.cfg, kv: kv, watcher: watcher, lease: lease, sessions: sessions, worker: worker, labels: labels,
		tracer:   store.cfg.TracerProvider.Tracer(TracerName),
		held:     make(map[string]*held),
		waits:    make(map[uint64]*localWait),
		taken:    make(map[int64]bool),
		affinity: make(map[string]string),
		drainCh:  make(chan struct{}),
		stopCh:   make(chan struct{}),
		schedQs:  make(map[string]bool),
	}
}

// Start starts the follower and the candidate. It does not wait for etcd.
func (d *Dispatcher) Start() {
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(2)
	go func() { defer d.wg.Done(); d.follow(runCtx) }()
	go func() { defer d.wg.Done(); d.campaign(runCtx) }()
}

// Stop ends the goroutines and timers. Claims still held stay in etcd
// until their lease goes; call Drain first to give them back.
func (d *Dispatcher) Stop() {
	d.mu.Lock()
	if !d.stopped {
		close(d.stopCh)
	}
	d.stopped = true
	for _, h := range d.held {
		if h.timer != nil {
			h.timer.Stop()
		}
	}
	d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.timerWG.Wait()
}

// Stats returns a copy of the counters.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Leading reports whether this sidecar is the fleet's scheduler now.
func (d *Dispatcher) Leading() bool { return d.leading.Load() }

// HeldCount returns the number of claims this sidecar holds.
func (d *Dispatcher) HeldCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held)
}

// Track names the queues this sidecar serves: while it is the scheduler,
// their depth is sampled for the Observer even before a task arrives.
func (d *Dispatcher) Track(queues ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range queues {
		if ValidateQueue(q) == nil {
			d.queues = append(d.queues, q)
		}
	}
}

// lastAffinity returns the affinity key of the last task handed to the
// worker session.
func (d *Dispatcher) lastAffinity(sessID string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.affinity[sessID]
}

// forgetSession drops what the dispatcher remembers of a closed session.
func (d *Dispatcher) forgetSession(sessID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.affinity, sessID)
}

// noteSchedQueue records a queue the scheduler served, so that its depth
// is sampled (bounded: the set starts afresh past maxSchedQueues).
func (d *Dispatcher) noteSchedQueue(q string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.schedQs) >= maxSchedQueues {
		clear(d.schedQs)
	}
	d.schedQs[q] = true
}

const maxSchedQueues = 1024
