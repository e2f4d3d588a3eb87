package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
)

// Dispatcher is one sidecar's side of the work queue: it hands tasks to the
// sidecar's workers (Next), answers for the claims it made (Complete, Fail,
// Release, Heartbeat), and takes part in recovering everyone's lost claims.
//
// It runs two goroutines between Start and Stop: the watcher follows the
// sidecar's single etcd watch on q/ (new work wakes waiting Next calls, the
// ready windows stay current, a claim key deleted by lease expiry is an
// orphan to recover), and the maintainer promotes delayed tasks when due,
// recovers orphans, expires claims past their deadline and removes finished
// tasks past retention.
type Dispatcher struct {
	store    *Store
	cfg      Config
	kv       clientv3.KV
	watcher  clientv3.Watcher
	lease    *coord.LeaseKeeper
	sessions *coord.Sessions
	worker   string
	tracer   trace.Tracer

	orphans   chan string   // ids of tasks whose claim key vanished with its lease
	delayHint chan struct{} // a delay entry was put; see hintDue
	sweepNow  chan struct{}

	mu        sync.Mutex
	windows   map[string]*window
	trying    map[string]bool // ready keys a local claimer is trying
	held      map[string]*held
	paused    map[string]bool        // queues paused by an operator (q/pause/<queue>)
	unsure    map[string]unsureClaim // claims whose transaction may have applied unseen
	depthSeen map[string]bool        // queues whose depth was reported (see sampleDepth)
	heldEmpty chan struct{}          // closed when held becomes empty while draining
	draining  bool
	drainCh   chan struct{}
	stopped   bool
	loadReq   chan struct{} // buffered 1: some window needs a load
	heldCh    chan struct{} // buffered 1: the number of claims held changed
	stats     Stats
	hintDue   time.Time     // earliest due time put since the maintainer last looked
	applied   int64         // revision the windows reflect
	advanced  chan struct{} // closed and replaced when applied rises

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	timerWG sync.WaitGroup
}

// claimTimeout bounds one claim transaction, so that a Next call reports
// etcd as unavailable instead of hanging.
const claimTimeout = 10 * time.Second

// Stats counts what the dispatcher did; read it with Stats.
type Stats struct {
	Claims, Conflicts, Requeued, Expired, Promoted, Removed int64
}

type held struct {
	c       *Claimed
	unhook  func()
	timer   *time.Timer
	session *coord.Session
	claimed time.Time         // when this sidecar claimed it
	span    trace.SpanContext // the claim span: parent of what follows in the task's trace
}

// unsureClaim is a claim transaction that failed with an error that does
// not say whether etcd applied it (the answer timed out or the connection
// broke). If it was applied, the claim key is bound to this sidecar's
// live lease but no worker knows of it; the sweep finds and releases it.
type unsureClaim struct {
	session string
	lease   int64
	at      time.Time
}

// unsureKeep is how long the sweep keeps looking for an unsure claim that
// it has not seen in etcd (its transaction may still be on the way).
const unsureKeep = time.Minute

func (d *Dispatcher) noteUnsure(readyKey, session string, lease clientv3.LeaseID) {
	e, err := parseReadyKey(readyKey)
	if err != nil {
		return
	}
	d.mu.Lock()
	d.unsure[e.ID] = unsureClaim{session: session, lease: int64(lease), at: time.Now()}
	d.mu.Unlock()
	d.requestSweep()
}

type orphan struct {
	id    string
	token int64
	st    Status
}

// NewDispatcher returns a dispatcher for the sidecar named worker. kv and
// watcher must be wrapped in the deployment's namespace.
func NewDispatcher(store *Store, kv clientv3.KV, watcher clientv3.Watcher, lease *coord.LeaseKeeper, sessions *coord.Sessions, worker string) *Dispatcher {
	return &Dispatcher{
		store: store, cfg: store.cfg, kv: kv, watcher: watcher, lease: lease, sessions: sessions, worker: worker,
		tracer:    store.cfg.TracerProvider.Tracer(TracerName),
		orphans:   make(chan string, 1024),
		delayHint: make(chan struct{}, 1),
		sweepNow:  make(chan struct{}, 1),
		windows:   make(map[string]*window),
		trying:    make(map[string]bool),
		held:      make(map[string]*held),
		paused:    make(map[string]bool),
		unsure:    make(map[string]unsureClaim),
		depthSeen: make(map[string]bool),
		drainCh:   make(chan struct{}),
		loadReq:   make(chan struct{}, 1),
		heldCh:    make(chan struct{}, 1),
		advanced:  make(chan struct{}),
	}
}

// Start starts the watcher and maintainer. It does not wait for etcd: the
// watcher reads the start revision (retrying until etcd answers) and the
// maintainer sweeps for orphaned and expired claims first thing.
func (d *Dispatcher) Start() {
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(2)
	go func() { defer d.wg.Done(); d.watch(runCtx) }()
	go func() { defer d.wg.Done(); d.maintain(runCtx) }()
}

// Stop ends the goroutines and timers. Claims still held stay in etcd
// until their lease goes; call Drain first to give them back.
func (d *Dispatcher) Stop() {
	d.mu.Lock()
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

// HeldCount returns the number of claims this sidecar holds.
func (d *Dispatcher) HeldCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held)
}

// Next claims a task from the first of queues that has one, waiting up to
// wait for one to arrive. It returns (nil, nil) when the wait ends without
// a task. With a session, the claim is given back with its attempt counted
// when the session closes. Cancelling ctx abandons the wait.
//
// A successful claim is traced as a span (SpanClaim) in the task's trace,
// child of the context stored at submit, linked to ctx's span, with the
// conflicts this call met as events; the returned Claimed's Traceparent is
// that span's, so the worker's span becomes its child.
func (d *Dispatcher) Next(ctx context.Context, queues []string, wait time.Duration, sess *coord.Session) (*Claimed, error) {
	for i, q := range queues {
		if err := ValidateQueue(q); err != nil {
			return nil, &InvalidError{Field: fmt.Sprintf("queues[%d]", i), Err: err}
		}
	}
	if len(queues) == 0 {
		return nil, invalid("queues", "at least one queue is required")
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	deadline := time.Now().Add(wait)
	var ripeTimer *time.Timer // wakes the caller when an entry of another share may be taken
	defer func() {
		if ripeTimer != nil {
			ripeTimer.Stop()
		}
	}()
	var sessDone <-chan struct{}
	sessID := ""
	if sess != nil {
		sessDone, sessID = sess.Done(), sess.ID
	}
	wt := &waiter{ch: make(chan struct{}, 1), queues: queues}
	defer d.unwait(wt)
	var catchUp *time.Timer
	var cl claimTrace
	for {
		ls, leaseChanged, err := d.lease.Session()
		if err != nil {
			select {
			case <-leaseChanged:
				continue
			case <-timer.C:
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-d.drainCh:
				return nil, ErrDraining
			}
		}
		d.mu.Lock()
		if d.draining {
			d.mu.Unlock()
			return nil, ErrDraining
		}
		// Register before looking, so a put after the look wakes us.
		wt.fired = ""
		select {
		case <-wt.ch:
		default:
		}
		var cand entry
		var win *window
		var unloaded chan struct{}
		var ripen time.Time
		now := time.Now()
		for _, q := range queues {
			w := d.windowLocked(q)
			w.unwait(wt)
			w.waiters = append(w.waiters, wt)
			if !w.loaded && unloaded == nil {
				unloaded = w.ready
			}
			if win == nil && !d.paused[q] {
				e, ok, at := w.pick(d.trying, w.share(ls.Lease(), now), now, deadline)
				switch {
				case ok:
					cand, win = e, w
				case !at.IsZero() && (ripen.IsZero() || at.Before(ripen)):
					ripen = at
				}
			}
		}
		if win != nil {
			d.trying[cand.key] = true
		}
		var behind chan struct{}
		if win == nil && d.applied < d.store.written.Load() {
			behind = d.advanced
		}
		d.mu.Unlock()

		if win == nil && unloaded == nil && behind != nil && catchUp == nil {
			catchUp = time.NewTimer(claimTimeout)
			defer catchUp.Stop()
		}
		if win == nil && unloaded == nil && behind != nil {
			// This sidecar wrote a ready entry the watch has not shown
			// yet (a submit or release just now): do not answer "empty"
			// before seeing it, but do not wait for a stuck watch forever.
			select {
			case <-behind:
				continue
			case <-catchUp.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-d.drainCh:
				return nil, ErrDraining
			}
		}

		if win == nil && unloaded != nil {
			// Do not answer "empty" before the window was read once.
			select {
			case <-unloaded:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-d.drainCh:
				return nil, ErrDraining
			}
		}

		if win != nil {
			if cl.start.IsZero() {
				cl.start = time.Now()
			}
			cctx, cancel := context.WithTimeout(ctx, claimTimeout)
			c, err := d.store.claim(cctx, cand.key, cand.modRev, cand.st, Holder{Worker: d.worker, Session: sessID, Lease: ls.Lease()})
			cancel()
			d.mu.Lock()
			delete(d.trying, cand.key)
			switch {
			case err == nil:
				win.remove(cand.key)
				win.succeeded()
				d.stats.Claims++
				delete(d.unsure, c.ID)
			case errors.Is(err, errConflict), errors.Is(err, errZombie):
				win.removeStale(cand.key, cand.modRev)
				win.conflicted(d.cfg.Window)
				d.stats.Conflicts++
			}
			d.mu.Unlock()
			switch {
			case err == nil:
				d.cfg.Observer.TaskClaimed(c.Status.Queue, max(time.Since(time.UnixMilli(cand.st.UpdatedMS)), 0))
				sc := d.traceClaim(ctx, c, &cl)
				return c, d.hold(c, sess, sc)
			case errors.Is(err, errConflict):
				d.conflict(ctx, cand, &cl)
				continue
			case errors.Is(err, errZombie):
				d.conflict(ctx, cand, &cl)
				d.cfg.Logger.WarnContext(ctx, "dropping ready entry of a claimed task", "key", cand.key)
				_ = d.store.dropZombie(ctx, cand.key, cand.modRev)
				continue
			case c != nil:
				// Claimed, but the spec is unreadable: it can never run.
				d.cfg.Logger.ErrorContext(ctx, "claimed task is broken; marking it dead", "task", c.ID, "err", err)
				state, _, ferr := d.store.fail(ctx, c.ID, c.Token, c.Status, err.Error(), true, 0)
				if ferr == nil {
					d.ended(c.Status.Queue, ReasonError, state)
				}
				continue
			default:
				// The transaction may have been applied although its
				// answer was lost: the sweep gives such a claim back.
				d.noteUnsure(cand.key, sessID, ls.Lease())
				return nil, fmt.Errorf("claim: %w", err)
			}
		}
		cl.start = time.Time{} // the claim span covers the attempts after the last wait
		var ripe <-chan time.Time
		if !ripen.IsZero() {
			if ripeTimer == nil {
				ripeTimer = time.NewTimer(time.Until(ripen))
			} else {
				ripeTimer.Reset(time.Until(ripen))
			}
			ripe = ripeTimer.C
		}
		select {
		case <-wt.ch:
		case <-ripe:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sessDone:
			return nil, coord.ErrUnknownSession
		case <-d.drainCh:
			return nil, ErrDraining
		}
	}
}

// windowLocked returns the window of queue q, asking the watcher to load
// it when needed.
func (d *Dispatcher) windowLocked(q string) *window {
	w := d.windows[q]
	if w == nil {
		w = &window{name: q, spread: minSpread, ready: make(chan struct{})}
		d.windows[q] = w
	}
	if w.needsLoad(d.cfg.Window) {
		w.loading = true
		select {
		case d.loadReq <- struct{}{}:
		default:
		}
	}
	return w
}

// unwait removes a waiter from its queues; a wake-up it took but did not
// use passes on to the next waiter of that queue.
func (d *Dispatcher) unwait(wt *waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range wt.queues {
		if w := d.windows[q]; w != nil {
			w.unwait(wt)
		}
	}
	if wt.fired != "" && len(wt.ch) == 1 {
		if w := d.windows[wt.fired]; w != nil {
			w.wake()
		}
	}
}

// hold records a new claim: its deadline timer and its session hook. sc
// is the claim's span.
func (d *Dispatcher) hold(c *Claimed, sess *coord.Session, sc trace.SpanContext) error {
	h := &held{c: c, session: sess, claimed: time.Now(), span: sc}
	d.mu.Lock()
	d.held[c.ID] = h
	d.armLocked(h)
	d.mu.Unlock()
	d.heldChanged()
	if sess != nil {
		id, token := c.ID, c.Token
		unhook, ok := sess.OnClose(func() { d.abandon(id, token, ReasonSessionClosed) })
		if !ok {
			d.abandon(id, token, ReasonSessionClosed)
			return coord.ErrUnknownSession
		}
		d.mu.Lock()
		h.unhook = unhook
		d.mu.Unlock()
	}
	return nil
}

// armLocked (re)starts the claim's deadline timer.
func (d *Dispatcher) armLocked(h *held) {
	if h.timer != nil {
		h.timer.Stop()
	}
	id, token := h.c.ID, h.c.Token
	h.timer = time.AfterFunc(time.Until(h.c.Deadline()), func() {
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		d.timerWG.Add(1)
		d.mu.Unlock()
		defer d.timerWG.Done()
		d.abandon(id, token, ReasonTimeout)
	})
}

// forget drops a claim from the held table, reporting to the observer
// that it ended with outcome.
func (d *Dispatcher) forget(id string, token int64, outcome Outcome) {
	d.mu.Lock()
	h := d.held[id]
	if h == nil || h.c.Token != token {
		d.mu.Unlock()
		return
	}
	d.cfg.Observer.ClaimEnded(h.c.Status.Queue, outcome, time.Since(h.claimed))
	delete(d.held, id)
	if h.timer != nil {
		h.timer.Stop()
	}
	unhook := h.unhook
	if len(d.held) == 0 && d.heldEmpty != nil {
		close(d.heldEmpty)
		d.heldEmpty = nil
	}
	d.mu.Unlock()
	d.heldChanged()
	if unhook != nil {
		unhook()
	}
}

func (d *Dispatcher) heldChanged() {
	select {
	case d.heldCh <- struct{}{}:
	default:
	}
}

// HeldChanged receives a value after the number of claims held changed
// (several changes may be reported by one value). One reader only: the
// registry.
func (d *Dispatcher) HeldChanged() <-chan struct{} { return d.heldCh }

// lostMessage is the error recorded for a claim lost for reason.
func lostMessage(reason Reason) string {
	switch reason {
	case ReasonSessionClosed:
		return "worker session closed while holding the task"
	case ReasonTimeout:
		return "no heartbeat within the task's timeout"
	case ReasonLeaseExpired:
		return "claim lost: the holding sidecar's lease expired"
	}
	return string(reason)
}

// abandon returns a held claim to the queue with its attempt counted.
func (d *Dispatcher) abandon(id string, token int64, reason Reason) {
	d.mu.Lock()
	h := d.held[id]
	d.mu.Unlock()
	if h == nil || h.c.Token != token {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx, span := d.startInTrace(ctx, h.span, SpanRequeue, trace.WithAttributes(append(taskAttrs(id, h.c.Status, token), AttrReason.String(string(reason)))...))
	state, err := d.store.abandon(ctx, id, token, 0, h.c.Status, lostMessage(reason))
	endSpan(span, state, err)
	if err != nil && !errors.Is(err, ErrClaimLost) {
		// etcd is unreachable. If the lease survives the outage nothing
		// else returns the task before its timeout, so try again; keep the
		// claim meanwhile so that a late Complete can still win. Losing
		// the lease forgets the claim and ends the retries.
		d.cfg.Logger.WarnContext(ctx, "returning claim failed; retrying", "task", id, "err", err)
		d.retryAbandon(id, token, reason)
		return
	}
	d.forget(id, token, OutcomeLost)
	if err == nil {
		d.ended(h.c.Status.Queue, reason, state)
		d.mu.Lock()
		d.stats.Requeued++
		d.mu.Unlock()
		d.cfg.Logger.InfoContext(ctx, "claim returned", "task", id, "reason", reason, "state", state)
	}
}

// abandonRetry is how long abandon waits before trying again.
const abandonRetry = time.Second

// retryAbandon calls abandon again after abandonRetry unless the
// dispatcher stops or the claim is gone meanwhile.
func (d *Dispatcher) retryAbandon(id string, token int64, reason Reason) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.held[id]
	if d.stopped || h == nil || h.c.Token != token {
		return
	}
	if h.timer != nil {
		h.timer.Stop()
	}
	h.timer = time.AfterFunc(abandonRetry, func() {
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		d.timerWG.Add(1)
		d.mu.Unlock()
		defer d.timerWG.Done()
		d.abandon(id, token, reason)
	})
}

// lookup finds the status of a live claim: from the held table, or from
// etcd for a claim this sidecar does not hold. span is the claim's span
// when this sidecar holds it.
func (d *Dispatcher) lookup(ctx context.Context, claim string) (id string, token int64, st Status, span trace.SpanContext, err error) {
	id, token, err = ParseClaim(claim)
	if err != nil {
		return "", 0, st, span, &InvalidError{Field: "claim", Err: err}
	}
	d.mu.Lock()
	h := d.held[id]
	d.mu.Unlock()
	if h != nil && h.c.Token == token {
		return id, token, h.c.Status, h.span, nil
	}
	resp, err := d.kv.Get(ctx, claimKey(id))
	if err != nil {
		return id, token, st, span, err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != token {
		return id, token, st, span, ErrClaimLost
	}
	st, err = decodeStatus(resp.Kvs[0].Value)
	return id, token, st, span, err
}

// Complete finishes the claimed task with its result. It is traced as a
// span (SpanComplete) in the task's trace.
func (d *Dispatcher) Complete(ctx context.Context, claim string, result json.RawMessage) error {
	id, token, st, sc, err := d.lookup(ctx, claim)
	if err != nil {
		return err
	}
	ctx, span := d.startInTrace(ctx, sc, SpanComplete, trace.WithAttributes(taskAttrs(id, st, token)...))
	err = d.store.Complete(ctx, id, token, st, result)
	switch {
	case err == nil:
		endSpan(span, StateDone, nil)
		d.cfg.Observer.TaskCompleted(st.Queue)
		d.forget(id, token, OutcomeCompleted)
		d.cfg.Logger.DebugContext(ctx, "task completed", "task", id, "queue", st.Queue, "attempt", st.Attempt)
	case errors.Is(err, ErrClaimLost):
		endSpan(span, "", err)
		d.forget(id, token, OutcomeLost)
	default:
		endSpan(span, "", err)
	}
	return err
}

// Fail records a failed attempt (see Store.Fail). It is traced as a span
// (SpanFail) in the task's trace.
func (d *Dispatcher) Fail(ctx context.Context, claim, msg string, permanent bool, retryAfter time.Duration) (bool, time.Time, error) {
	id, token, st, sc, err := d.lookup(ctx, claim)
	if err != nil {
		return false, time.Time{}, err
	}
	ctx, span := d.startInTrace(ctx, sc, SpanFail, trace.WithAttributes(taskAttrs(id, st, token)...))
	state, at, err := d.store.fail(ctx, id, token, st, msg, permanent, retryAfter)
	switch {
	case err == nil:
		endSpan(span, state, nil)
		d.ended(st.Queue, ReasonError, state)
		d.forget(id, token, OutcomeFailed)
		d.cfg.Logger.DebugContext(ctx, "task failed", "task", id, "queue", st.Queue, "attempt", st.Attempt, "state", state)
	case errors.Is(err, ErrClaimLost):
		endSpan(span, "", err)
		d.forget(id, token, OutcomeLost)
	default:
		endSpan(span, "", err)
	}
	return state == StateFailed, at, err
}

// Release gives the claimed task back without using an attempt. It is
// traced as a span (SpanRelease) in the task's trace.
func (d *Dispatcher) Release(ctx context.Context, claim string) error {
	id, token, st, sc, err := d.lookup(ctx, claim)
	if err != nil {
		return err
	}
	ctx, span := d.startInTrace(ctx, sc, SpanRelease, trace.WithAttributes(taskAttrs(id, st, token)...))
	state, err := d.store.release(ctx, id, token, st)
	switch {
	case err == nil:
		endSpan(span, state, nil)
		d.ended(st.Queue, ReasonReleased, state)
		d.forget(id, token, OutcomeReleased)
	case errors.Is(err, ErrClaimLost):
		endSpan(span, "", err)
		d.forget(id, token, OutcomeLost)
	default:
		endSpan(span, "", err)
	}
	return err
}

// Heartbeat extends the claim's deadline and reports whether cancelling
// the task was requested.
func (d *Dispatcher) Heartbeat(ctx context.Context, claim string) (Status, error) {
	id, token, st, _, err := d.lookup(ctx, claim)
	if err != nil {
		return st, err
	}
	st, err = d.store.Heartbeat(ctx, id, token, st)
	if errors.Is(err, ErrClaimLost) {
		d.forget(id, token, OutcomeLost)
	}
	if err != nil {
		return st, err
	}
	d.mu.Lock()
	if h := d.held[id]; h != nil && h.c.Token == token {
		h.c.Status = st
		d.armLocked(h)
	}
	d.mu.Unlock()
	return st, nil
}

// Drain stops handing out tasks, waits until the claims in hand are
// answered or ctx ends, and then gives back the rest without using their
// attempts.
func (d *Dispatcher) Drain(ctx context.Context) {
	d.mu.Lock()
	if !d.draining {
		d.draining = true
		close(d.drainCh)
	}
	var empty chan struct{}
	if len(d.held) > 0 {
		empty = make(chan struct{})
		d.heldEmpty = empty
	}
	d.mu.Unlock()
	if empty != nil {
		select {
		case <-empty:
		case <-ctx.Done():
		}
	}
	d.mu.Lock()
	rest := make([]*held, 0, len(d.held))
	for _, h := range d.held {
		rest = append(rest, h)
	}
	d.mu.Unlock()
	for _, h := range rest {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rctx, span := d.startInTrace(rctx, h.span, SpanRequeue, trace.WithAttributes(append(taskAttrs(h.c.ID, h.c.Status, h.c.Token), AttrReason.String(string(ReasonShutdown)))...))
		state, err := d.store.release(rctx, h.c.ID, h.c.Token, h.c.Status)
		endSpan(span, state, err)
		cancel()
		switch {
		case err == nil:
			d.ended(h.c.Status.Queue, ReasonShutdown, state)
			d.forget(h.c.ID, h.c.Token, OutcomeReleased)
		case errors.Is(err, ErrClaimLost):
			d.forget(h.c.ID, h.c.Token, OutcomeLost)
		default:
			d.cfg.Logger.WarnContext(rctx, "releasing claim at shutdown failed; it returns when the lease is revoked or expires", "task", h.c.ID, "err", err)
			d.forget(h.c.ID, h.c.Token, OutcomeLost)
		}
	}
}

// watch follows q/ until ctx ends, resynchronising after errors (for
// example when the revision it needs was compacted).
func (d *Dispatcher) watch(ctx context.Context) {
	rev := d.currentRevision(ctx)
	for ctx.Err() == nil {
		d.reloadAll(ctx, rev)
		d.advance(rev)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		// No WithPrevKV: etcd would read the previous value of every
		// event for every sidecar's watch (a quarter of its work with four
		// sidecars, measured); the one event that needs it, a claim lost
		// with its lease, is looked up in state/<id> instead.
		ch := d.watcher.Watch(wctx, prefixQ, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		d.follow(ctx, ch, rev)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Start again from the current revision; the sweep catches what
		// happened in between.
		rev = d.currentRevision(ctx)
		d.requestSweep()
	}
}

// currentRevision reads etcd's current revision, retrying until etcd
// answers or ctx ends.
func (d *Dispatcher) currentRevision(ctx context.Context) int64 {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.kv.Get(rctx, prefixQ, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return resp.Header.Revision
		}
		d.cfg.Logger.Warn("etcd not answering; retrying", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return 0
}

// follow applies watch responses until the watch fails or ctx ends; it
// returns the last revision applied. The caller reloads the window from a
// fresh revision afterwards, so the return value is informational.
func (d *Dispatcher) follow(ctx context.Context, ch clientv3.WatchChan, rev int64) int64 {
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-d.loadReq:
			if err := d.loadPending(ctx, rev); err != nil {
				d.cfg.Logger.Warn("loading ready window failed", "err", err)
				if errors.Is(err, rpctypes.ErrCompacted) {
					return rev
				}
			}
		case resp, ok := <-ch:
			if !ok {
				return rev
			}
			if err := resp.Err(); err != nil {
				d.cfg.Logger.Warn("watch failed; resynchronising", "err", err)
				return rev
			}
			if resp.IsProgressNotify() {
				rev = max(rev, resp.Header.Revision)
			} else {
				rev = max(rev, d.apply(resp.Events))
			}
			d.advance(rev)
		}
	}
}

// advance records that the windows reflect etcd up to rev and wakes Next
// calls waiting for the watch to catch up.
func (d *Dispatcher) advance(rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rev > d.applied {
		d.applied = rev
		close(d.advanced)
		d.advanced = make(chan struct{})
	}
}

// apply updates the windows from one watch response and reports orphans.
func (d *Dispatcher) apply(evs []*clientv3.Event) int64 {
	var last int64
	runDeleted := map[string]int64{}
	readyDeleted := map[int64]string{} // revision → queue of a ready entry deleted then
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE {
			key := string(ev.Kv.Key)
			if id, ok := strings.CutPrefix(key, prefixRun); ok {
				runDeleted[id] = ev.Kv.ModRevision
			} else if rest, ok := strings.CutPrefix(key, prefixReady); ok {
				if q, _, ok := strings.Cut(rest, "/"); ok {
					readyDeleted[ev.Kv.ModRevision] = q
				}
			}
		}
	}
	var lost []string
	var notices []func()
	now := time.Now()
	d.mu.Lock()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		last = max(last, ev.Kv.ModRevision)
		switch {
		case strings.HasPrefix(key, prefixPause):
			q := key[len(prefixPause):]
			if ev.Type == mvccpb.DELETE {
				delete(d.paused, q)
				if w := d.windows[q]; w != nil {
					w.wakeAll()
				}
			} else {
				d.paused[q] = true
			}
		case strings.HasPrefix(key, prefixCancel) && ev.Type == mvccpb.PUT:
			if f := d.cancelRequestedLocked(key[len(prefixCancel):], string(ev.Kv.Value)); f != nil {
				notices = append(notices, f)
			}
		case strings.HasPrefix(key, prefixReady):
			e, err := parseReadyKey(key)
			if err != nil {
				continue
			}
			w := d.windows[e.Queue]
			if w == nil {
				continue
			}
			if ev.Type == mvccpb.DELETE {
				w.remove(key)
				continue
			}
			st, err := decodeStatus(ev.Kv.Value)
			if err != nil {
				continue
			}
			w.put(newEntry(key, ev.Kv.ModRevision, st, now), d.cfg.Window)
			if !w.loaded || (!w.complete && key > w.horizon) {
				if w.needsLoad(d.cfg.Window) {
					w.loading = true
					select {
					case d.loadReq <- struct{}{}:
					default:
					}
				}
			}
			w.wake()
		case strings.HasPrefix(key, prefixDelay) && ev.Type == mvccpb.PUT:
			if due, _, err := parseDelayKey(key); err == nil {
				if d.hintDue.IsZero() || due.Before(d.hintDue) {
					d.hintDue = due
				}
				select {
				case d.delayHint <- struct{}{}:
				default:
				}
			}
		case strings.HasPrefix(key, prefixClaim) && ev.IsCreate() && ev.Kv.Lease != 0:
			// The claim transaction deleted the task's ready entry in the
			// same revision: that says which queue it claimed from.
			if w := d.windows[readyDeleted[ev.Kv.ModRevision]]; w != nil {
				w.claimed(clientv3.LeaseID(ev.Kv.Lease), now)
			}
		case strings.HasPrefix(key, prefixClaim) && ev.Type == mvccpb.DELETE:
			id := key[len(prefixClaim):]
			if runDeleted[id] == ev.Kv.ModRevision {
				continue // answered or returned in the same transaction
			}
			lost = append(lost, id)
		}
	}
	d.mu.Unlock()
	for _, f := range notices {
		f()
	}
	for _, id := range lost {
		select {
		case d.orphans <- id:
		default: // the periodic sweep finds it
		}
	}
	return last
}

// loadPending reads every window that asked for a load, at revision rev so
// that the watch events that follow apply on top of it.
func (d *Dispatcher) loadPending(ctx context.Context, rev int64) error {
	d.mu.Lock()
	var names []string
	for name, w := range d.windows {
		if w.loading {
			names = append(names, name)
		}
	}
	d.mu.Unlock()
	for i, name := range names {
		if err := d.load(ctx, name, rev); err != nil {
			// Let the next Next on these queues ask again.
			d.mu.Lock()
			for _, n := range names[i:] {
				if w := d.windows[n]; w != nil {
					w.loading = false
				}
			}
			d.mu.Unlock()
			return err
		}
	}
	return nil
}

func (d *Dispatcher) load(ctx context.Context, name string, rev int64) error {
	p := readyPrefix(name)
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithLimit(int64(d.cfg.Window)), clientv3.WithSerializable()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := d.kv.Get(ctx, p, opts...)
	if err != nil {
		return err
	}
	entries := make([]entry, 0, len(resp.Kvs))
	seen := time.Now()
	for _, kv := range resp.Kvs {
		st, err := decodeStatus(kv.Value)
		if err != nil {
			continue
		}
		entries = append(entries, newEntry(string(kv.Key), kv.ModRevision, st, seen))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.windows[name]
	if w == nil {
		return nil
	}
	if !w.loaded {
		close(w.ready)
	}
	for i := range entries {
		// An entry known before the reload keeps the time it was first seen.
		if j, ok := w.find(entries[i].key); ok && w.entries[j].modRev == entries[i].modRev {
			entries[i].seen = w.entries[j].seen
		}
	}
	w.entries, w.loaded, w.loading = entries, true, false
	w.complete = !resp.More
	w.horizon = ""
	if len(entries) > 0 {
		w.horizon = entries[len(entries)-1].key
	}
	for range entries {
		if !w.wake() {
			break
		}
	}
	return nil
}

// reloadAll reloads the paused queues and every window at rev (after a
// resync) and wakes all waiters so they look again.
func (d *Dispatcher) reloadAll(ctx context.Context, rev int64) {
	if err := d.loadPaused(ctx, rev); err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("reading paused queues failed", "err", err)
	}
	d.mu.Lock()
	for _, w := range d.windows {
		w.loading = true
	}
	d.mu.Unlock()
	if err := d.loadPending(ctx, rev); err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("reloading ready windows failed", "err", err)
	}
	d.mu.Lock()
	for _, w := range d.windows {
		w.wakeAll()
	}
	d.mu.Unlock()
}

// loadPaused reads the paused queues at rev.
func (d *Dispatcher) loadPaused(ctx context.Context, rev int64) error {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := d.kv.Get(ctx, prefixPause, opts...)
	if err != nil {
		return err
	}
	paused := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		paused[strings.TrimPrefix(string(kv.Key), prefixPause)] = true
	}
	d.mu.Lock()
	d.paused = paused
	d.mu.Unlock()
	return nil
}

// CancelNotice is pushed to a worker session (coord.Session.Push) when an
// operator asks to cancel a task the session holds.
type CancelNotice struct {
	TaskID string
	Claim  string
}

// cancelRequestedLocked marks a held claim as cancel-requested and returns
// the push to its worker session, if it has one.
func (d *Dispatcher) cancelRequestedLocked(id, tokenStr string) func() {
	token, err := strconv.ParseInt(tokenStr, 10, 64)
	h := d.held[id]
	if err != nil || h == nil || h.c.Token != token || h.c.Status.CancelRequested {
		return nil
	}
	h.c.Status.CancelRequested = true
	d.cfg.Logger.Info("cancel requested", "task", id)
	if h.session == nil {
		return nil
	}
	sess, n := h.session, CancelNotice{TaskID: id, Claim: h.c.Claim()}
	return func() {
		if !sess.Push(n) {
			d.cfg.Logger.Warn("worker session's push queue is full; the worker learns of the cancel through Heartbeat", "task", id)
		}
	}
}

// Paused reports whether this sidecar's watch has seen queue q paused.
func (d *Dispatcher) Paused(q string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused[q]
}

// claimTrace collects what one Next call met before its claim succeeded.
type claimTrace struct {
	start     time.Time // first claim attempt since the call last waited
	conflicts []conflictEvent
	n         int // conflicts met, including those not kept as events
}

type conflictEvent struct {
	at time.Time
	id string
}

// maxConflictEvents bounds the events kept for one claim span.
const maxConflictEvents = 16

// conflict records a claim transaction that lost to another claimer.
func (d *Dispatcher) conflict(ctx context.Context, cand entry, cl *claimTrace) {
	d.cfg.Observer.ClaimConflict(cand.st.Queue)
	id := ""
	if e, err := parseReadyKey(cand.key); err == nil {
		id = e.ID
	}
	cl.n++
	if len(cl.conflicts) < maxConflictEvents {
		cl.conflicts = append(cl.conflicts, conflictEvent{at: time.Now(), id: id})
	}
	trace.SpanFromContext(ctx).AddEvent("claim conflict", trace.WithAttributes(AttrTaskID.String(id), AttrTaskQueue.String(cand.st.Queue)))
}

// traceClaim records the span of a successful claim and points c's
// Traceparent at it. It returns the span's context.
func (d *Dispatcher) traceClaim(ctx context.Context, c *Claimed, cl *claimTrace) trace.SpanContext {
	_, span := d.startInTrace(ctx, ParseTraceparent(c.Traceparent), SpanClaim,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(cl.start),
		trace.WithAttributes(append(taskAttrs(c.ID, c.Status, c.Token), AttrConflicts.Int(cl.n))...))
	for _, e := range cl.conflicts {
		span.AddEvent("claim conflict", trace.WithTimestamp(e.at), trace.WithAttributes(AttrTaskID.String(e.id)))
	}
	sctx := trace.ContextWithSpan(ctx, span)
	d.cfg.Logger.DebugContext(sctx, "task claimed", "task", c.ID, "queue", c.Status.Queue, "attempt", c.Status.Attempt, "fencing_token", c.Token, "conflicts", cl.n)
	span.End()
	sc := span.SpanContext()
	if sc.IsValid() {
		c.Traceparent = FormatTraceparent(sc)
	}
	return sc
}
