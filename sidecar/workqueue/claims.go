package workqueue

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/trace"
)

// The held table: the claims this sidecar holds for its workers, each with
// the timer of its deadline and the hook of its worker session, and the
// answers to them (Complete, Fail, Release, Heartbeat). Every answer is a
// transaction that compares the claim's fencing token, so the table is a
// cache of what the sidecar believes it holds, never the authority.

type held struct {
	c       *Claimed
	unhook  func()
	timer   clockwork.Timer
	session *coord.Session
	claimed time.Time         // when this sidecar claimed it
	span    trace.SpanContext // the claim span: parent of what follows in the task's trace
}

// hold records a new claim: its deadline timer and its session hook. sc
// is the claim's span.
func (d *Dispatcher) hold(c *Claimed, sess *coord.Session, sc trace.SpanContext) error {
	h := &held{c: c, session: sess, claimed: d.cfg.Now(), span: sc}
	d.mu.Lock()
	d.held[c.ID] = h
	d.armLocked(h)
	d.mu.Unlock()
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
	h.timer = d.cfg.Clock.AfterFunc(d.cfg.Clock.Until(h.c.Deadline()), func() {
		d.tracked(func() { d.abandon(id, token, ReasonTimeout) })
	})
}

// tracked runs f counted in timerWG (Stop waits for it), unless the
// dispatcher has stopped. It is how timers and background retries run.
func (d *Dispatcher) tracked(f func()) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.timerWG.Add(1)
	d.mu.Unlock()
	defer d.timerWG.Done()
	f()
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
	d.cfg.Observer.ClaimEnded(h.c.Status.Queue, outcome, d.cfg.Clock.Since(h.claimed))
	delete(d.held, id)
	delete(d.taken, token)
	if h.timer != nil {
		h.timer.Stop()
	}
	unhook := h.unhook
	if len(d.held) == 0 && d.heldEmpty != nil {
		close(d.heldEmpty)
		d.heldEmpty = nil
	}
	d.mu.Unlock()
	if unhook != nil {
		unhook()
	}
}

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
	h.timer = d.cfg.Clock.AfterFunc(abandonRetry, func() {
		d.tracked(func() { d.abandon(id, token, reason) })
	})
}

// refused counts an answer refused because its claim is not live: not
// held here (lookup), or held here but gone in etcd (the lease lapsed,
// the claim expired and the task was claimed again).
func (d *Dispatcher) refused() {
	d.mu.Lock()
	d.stats.Refused++
	d.mu.Unlock()
}

// lookup finds a live claim that this sidecar holds, by its handle: the
// task id, the fencing token and the secret must all match. A claim held
// by another sidecar, an old claim of the same task, or a guessed handle
// is ErrClaimLost (and changes nothing); the refusal is counted. span is
// the claim's span.
func (d *Dispatcher) lookup(ctx context.Context, claim string) (id string, token int64, st Status, span trace.SpanContext, err error) {
	id, token, secret, err := ParseClaim(claim)
	if err != nil {
		return "", 0, st, span, &InvalidError{Field: "claim", Err: err}
	}
	d.mu.Lock()
	h := d.held[id]
	ok := h != nil && h.c.Token == token && subtle.ConstantTimeCompare([]byte(h.c.secret), []byte(secret)) == 1
	if ok {
		st, span = h.c.Status, h.span
	}
	d.mu.Unlock()
	if !ok {
		d.refused()
	}
	if !ok {
		return id, token, st, span, ErrClaimLost // the socket server logs it, with the caller
	}
	return id, token, st, span, nil
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
	if d.settle(span, id, token, StateDone, OutcomeCompleted, err) {
		d.cfg.Observer.TaskCompleted(st.Queue)
		d.cfg.Logger.DebugContext(ctx, "task completed", "task", id, "queue", st.Queue, "attempt", st.Attempt)
	}
	return err
}

// settle ends the span of an answer that left the task in state (or
// failed with err) and updates the held table: the claim ended with
// outcome, or was lost. It reports whether the answer was accepted.
func (d *Dispatcher) settle(span trace.Span, id string, token int64, state State, outcome Outcome, err error) bool {
	switch {
	case err == nil:
		endSpan(span, state, nil)
		d.forget(id, token, outcome)
		return true
	case errors.Is(err, ErrClaimLost):
		endSpan(span, "", err)
		d.forget(id, token, OutcomeLost)
		d.refused()
	default:
		endSpan(span, "", err)
	}
	return false
}

// Fail records a failed attempt (see Store.Fail). It is traced as a span
// (SpanFail) in the task's trace.
func (d *Dispatcher) Fail(ctx context.Context, claim, msg string, permanent bool, retryAfter time.Duration) (bool, time.Time, error) {
	if retryAfter < 0 || retryAfter > MaxDelay {
		return false, time.Time{}, invalid("retry_after", "%v is outside 0..%v", retryAfter, MaxDelay)
	}
	id, token, st, sc, err := d.lookup(ctx, claim)
	if err != nil {
		return false, time.Time{}, err
	}
	ctx, span := d.startInTrace(ctx, sc, SpanFail, trace.WithAttributes(taskAttrs(id, st, token)...))
	state, at, err := d.store.fail(ctx, id, token, st, msg, permanent, retryAfter)
	if d.settle(span, id, token, state, OutcomeFailed, err) {
		d.ended(st.Queue, ReasonError, state)
		d.cfg.Logger.DebugContext(ctx, "task failed", "task", id, "queue", st.Queue, "attempt", st.Attempt, "state", state)
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
	if d.settle(span, id, token, state, OutcomeReleased, err) {
		d.ended(st.Queue, ReasonReleased, state)
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
		d.refused()
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

// CancelNotice is pushed to a worker session (coord.Session.Push) when an
// operator asks to cancel a task the session holds.
type CancelNotice struct {
	TaskID string
	Claim  string
}

// cancelRequestedLocked marks a held claim as cancel-requested and returns
// the push to its worker session, if it has one.
func (d *Dispatcher) cancelRequestedLocked(id, wait string) func() {
	h := d.held[id]
	if h == nil || h.c.Status.Wait != wait || h.c.Status.CancelRequested {
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
