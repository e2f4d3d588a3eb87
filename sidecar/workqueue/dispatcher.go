package workqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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

// CheckQueues reports what is wrong with the queues of a Next call (an
// *InvalidError naming queues or queues[i]): 1 to MaxQueuesPerNext valid
// queue names.
func CheckQueues(queues []string) error {
	if len(queues) == 0 {
		return invalid("queues", "at least one queue is required")
	}
	if len(queues) > MaxQueuesPerNext {
		return invalid("queues", "%d queues, over the limit of %d", len(queues), MaxQueuesPerNext)
	}
	for i, q := range queues {
		if err := ValidateQueue(q); err != nil {
			return &InvalidError{Field: fmt.Sprintf("queues[%d]", i), Err: err}
		}
	}
	return nil
}

// Next claims a task from the first of queues that has one, waiting up to
// wait for one to arrive. It returns (nil, nil) when the wait ends without
// a task. With a session, the claim is given back with its attempt counted
// when the session closes. Cancelling ctx abandons the wait.
//
// With wait 0 Next claims from the head of the ready index itself (one
// read and one transaction: see poll.go). Otherwise it registers a wait
// key and the scheduler assigns it a task; no other sidecar sees either.
//
// A successful claim is traced as a span (SpanClaim) in the task's trace,
// child of the context stored at submit, linked to ctx's span; the
// returned Claimed's Traceparent is that span's, so the worker's span
// becomes its child.
func (d *Dispatcher) Next(ctx context.Context, queues []string, wait time.Duration, sess *coord.Session) (*Claimed, error) {
	if err := CheckQueues(queues); err != nil {
		return nil, err
	}
	if d.isDraining() {
		return nil, ErrDraining
	}
	if wait <= 0 {
		return d.poll(ctx, queues, sess)
	}
	timer := d.cfg.Clock.NewTimer(wait)
	defer timer.Stop()
	var sessDone <-chan struct{}
	sessID := ""
	if sess != nil {
		sessDone, sessID = sess.Done(), sess.ID
	}
	start := d.cfg.Now()
	deadline := start.Add(wait)
	backoff := 50 * time.Millisecond // between failed registrations
	var (
		lw       *localWait // the registration in progress, nil for none
		seq      uint64
		key      string
		keyLease clientv3.LeaseID
	)
	for {
		ls, leaseChanged, err := d.lease.Session()
		if err != nil {
			select {
			case <-leaseChanged:
				continue
			case <-timer.Chan():
				if lw != nil {
					d.leaveWait(seq)
				}
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-d.drainCh:
				return nil, ErrDraining
			}
		}
		if lw == nil || keyLease != ls.Lease() {
			// One key per registration: a put retried after a failure
			// that etcd may have applied writes the same key again.
			if lw != nil {
				d.leaveWait(seq)
			}
			seq, lw = d.addWait(false)
			key, keyLease = waitKey(ls.Lease(), seq), ls.Lease()
		}
		rec := waitRecord{Queues: queues, Session: sessID, Holder: d.worker, Labels: d.labels, Affinity: d.lastAffinity(sessID)}
		pctx, cancel := context.WithTimeout(ctx, max(min(d.cfg.Clock.Until(deadline), claimTimeout), time.Second))
		rev, err := d.store.putWait(pctx, key, rec, ls.Lease())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				d.leaveWait(seq)
				return nil, ctx.Err()
			}
			// etcd may be coming back: try again while the caller's wait
			// lasts. A lease etcd no longer knows is replaced by the
			// lease keeper: wait for that rather than retry on it.
			if backoff == 50*time.Millisecond {
				d.cfg.Logger.Warn("registering a waiting Next failed; retrying while the wait lasts", "err", err)
			}
			retry := d.cfg.Clock.After(backoff)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				retry = nil
			}
			select {
			case <-retry:
				backoff = min(2*backoff, time.Second)
				continue
			case <-ls.Done():
				continue
			case <-timer.Chan():
				d.leaveWait(seq) // an assignment to a put that etcd applied goes back
				return nil, fmt.Errorf("waiting for a task: %w", err)
			case <-ctx.Done():
				d.leaveWait(seq)
				return nil, ctx.Err()
			case <-d.drainCh:
				d.leaveWait(seq)
				return nil, ErrDraining
			}
		}
		backoff = 50 * time.Millisecond
		var gone string // why the caller stops waiting, "" while it waits
		select {
		case token := <-lw.ch:
			id := lw.id
			lw = nil
			if c, err := d.take(ctx, seq, id, token, sess, start); c != nil || err != nil {
				return c, err
			}
			continue // the claim was lost before it could be read; wait again
		case <-ls.Done():
			d.leaveWait(seq) // the wait key went with the lease
			lw = nil
			continue
		case <-timer.Chan():
			gone = "timeout"
		case <-ctx.Done():
			gone = "cancelled"
		case <-sessDone:
			gone = "session"
		case <-d.drainCh:
			gone = "draining"
		}
		// Withdraw the wait key unless a task was assigned meanwhile.
		dctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
		dropped, err := d.store.dropWait(dctx, key, rev)
		cancel()
		if err == nil && !dropped && gone == "timeout" {
			// Assigned (or gone with the lease) just as the wait ended:
			// take the task if the assignment arrives.
			select {
			case token := <-lw.ch:
				if c, err := d.take(ctx, seq, lw.id, token, sess, start); c != nil || err != nil {
					return c, err
				}
			case <-ls.Done():
			case <-d.cfg.Clock.After(claimTimeout):
			case <-ctx.Done():
			}
		}
		d.leaveWait(seq)
		switch gone {
		case "timeout":
			return nil, nil
		case "cancelled":
			return nil, ctx.Err()
		case "session":
			return nil, coord.ErrUnknownSession
		default:
			return nil, ErrDraining
		}
	}
}

func (d *Dispatcher) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

// addWait records a new waiting Next call (or, with poll, the wait key of
// a claim Next makes itself) and returns its sequence.
func (d *Dispatcher) addWait(poll bool) (uint64, *localWait) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	lw := &localWait{ch: make(chan int64, 1), poll: poll}
	d.waits[d.seq] = lw
	return d.seq, lw
}

// leaveWait forgets a Next call's wait. An assignment it was sent and did
// not take goes back to the queue.
func (d *Dispatcher) leaveWait(seq uint64) {
	d.mu.Lock()
	lw := d.waits[seq]
	delete(d.waits, seq)
	var token int64
	var id string
	if lw != nil && lw.id != "" {
		select {
		case token = <-lw.ch:
			id = lw.id
			delete(d.taken, token)
		default:
		}
	}
	d.mu.Unlock()
	if id != "" {
		d.giveBack(id, token)
	}
}

// deliver hands the assignment of task id (token) to the Next call waiting
// on seq, or gives it back when none waits for it.
func (d *Dispatcher) deliver(seq uint64, id string, token int64) {
	d.mu.Lock()
	if d.taken[token] {
		d.mu.Unlock()
		return // seen before a resync of the watch
	}
	d.taken[token] = true
	lw := d.waits[seq]
	if lw != nil && lw.poll {
		lw.polled = token
		d.mu.Unlock()
		return
	}
	if lw != nil && lw.id == "" {
		lw.id = id
		lw.ch <- token
		d.mu.Unlock()
		return
	}
	delete(d.taken, token)
	d.mu.Unlock()
	d.giveBack(id, token)
}

// giveBack releases, without using an attempt, a claim that was assigned
// to this sidecar but reached no worker. It runs in the background and
// tries again every abandonRetry while etcd does not answer, until the
// claim is released, found gone, lost with this sidecar's lease, or the
// dispatcher stops.
func (d *Dispatcher) giveBack(id string, token int64) {
	go d.tracked(func() {
		for !d.tryGiveBack(id, token) {
			select {
			case <-d.cfg.Clock.After(abandonRetry):
			case <-d.stopCh:
				return
			}
		}
	})
}

// tryGiveBack is one attempt of giveBack; it reports whether it is over.
func (d *Dispatcher) tryGiveBack(id string, token int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	resp, err := d.kv.Get(ctx, claimKey(id))
	if err != nil {
		d.cfg.Logger.Warn("giving back an assignment that reached no worker failed; retrying", "task", id, "err", err)
		return false
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != token {
		return true // ended meanwhile
	}
	ls, _, err := d.lease.Session()
	if err != nil {
		return false // no lease just now: look again
	}
	if int64(ls.Lease()) != resp.Kvs[0].Lease {
		return true // bound to a lease this sidecar lost: it goes with that lease
	}
	st, err := decodeStatus(resp.Kvs[0].Value)
	if err != nil {
		return true
	}
	state, err := d.store.release(ctx, id, token, st)
	switch {
	case err == nil:
		d.ended(st.Queue, ReasonUnknownOutcome, state)
		d.cfg.Logger.Info("assignment that reached no worker given back", "task", id)
		return true
	case errors.Is(err, ErrClaimLost):
		return true
	}
	d.cfg.Logger.Warn("giving back an assignment that reached no worker failed; retrying", "task", id, "err", err)
	return false
}

// take reads the task assigned to the Next call on seq and holds its
// claim. It returns (nil, nil) when the claim ended before it was read.
func (d *Dispatcher) take(ctx context.Context, seq uint64, id string, token int64, sess *coord.Session, start time.Time) (*Claimed, error) {
	d.mu.Lock()
	delete(d.waits, seq)
	d.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	c, err := d.store.readClaim(rctx, id, token)
	cancel()
	switch {
	case c != nil && err != nil:
		d.discard(ctx, c, err)
		return nil, nil
	case c != nil && ctx.Err() == nil:
		return d.claimed(ctx, c, sess, claimTrace{start: start})
	}
	d.untake(token)
	switch {
	case c != nil: // the caller left while the claim was read
		d.giveBack(id, token)
		return nil, ctx.Err()
	case err != nil && !errors.Is(err, ErrClaimLost):
		d.giveBack(id, token)
		return nil, fmt.Errorf("claim: %w", err)
	}
	return nil, nil
}

// untake forgets that the assignment of token was handed to a Next call
// (it was not taken after all).
func (d *Dispatcher) untake(token int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.taken, token)
}

// discard ends a claim whose task can never run (its spec is unreadable):
// the task is DEAD at once, with the reason.
func (d *Dispatcher) discard(ctx context.Context, c *Claimed, err error) {
	d.untake(c.Token)
	d.cfg.Logger.ErrorContext(ctx, "claimed task is broken; marking it dead", "task", c.ID, "err", err)
	state, _, ferr := d.store.fail(ctx, c.ID, c.Token, c.Status, err.Error(), true, 0)
	if ferr == nil {
		d.ended(c.Status.Queue, ReasonError, state)
	}
}

// claimed records a claim made for a Next call and returns it.
func (d *Dispatcher) claimed(ctx context.Context, c *Claimed, sess *coord.Session, cl claimTrace) (*Claimed, error) {
	c.secret = newClaimSecret()
	d.mu.Lock()
	d.stats.Claims++
	first := false
	if c.Status.Affinity != "" {
		sessID := ""
		if sess != nil {
			sessID = sess.ID
		}
		_, had := d.affinity[sessID]
		first = !had && sess != nil
		d.affinity[sessID] = c.Status.Affinity
	}
	d.mu.Unlock()
	if first {
		id := sess.ID
		if _, ok := sess.OnClose(func() { d.forgetSession(id) }); !ok {
			d.forgetSession(id) // closed already
		}
	}
	d.cfg.Observer.TaskClaimed(c.Status.Queue, max(d.cfg.Clock.Since(time.UnixMilli(c.Status.ReadyMS)), 0))
	sc := d.traceClaim(ctx, c, &cl)
	return c, d.hold(c, sess, sc)
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
