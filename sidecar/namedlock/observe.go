package namedlock

import (
	"context"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Outcome is how a Lock or TryLock ended: the outcome label of
// baton_lock_wait_seconds and the baton.lock.outcome span attribute, so the
// set is closed.
type Outcome string

// The outcomes.
const (
	OutcomeAcquired  Outcome = "acquired"  // Lock or TryLock got the lock
	OutcomeTimeout   Outcome = "timeout"   // Lock's wait ended without it
	OutcomeBusy      Outcome = "busy"      // TryLock, or Lock with wait 0, found it held
	OutcomeCancelled Outcome = "cancelled" // the caller went away (session closed, call cancelled)
	OutcomeError     Outcome = "error"     // etcd failed or the request was bad
)

// Outcomes lists every Outcome.
var Outcomes = []Outcome{OutcomeAcquired, OutcomeTimeout, OutcomeBusy, OutcomeCancelled, OutcomeError}

// Observer is told how lock waits end, for metrics (package
// sidecar/telemetry implements it). It is called synchronously at the end
// of each Lock and TryLock, possibly concurrently; it must be quick and
// must not call back into Locks. Lock names are never passed: metrics must
// not be labelled by them.
type Observer interface {
	// LockWaited: a Lock or TryLock ended with outcome after waited,
	// measured on the Locks' clock.
	LockWaited(outcome Outcome, waited time.Duration)
}

type nopObserver struct{}

func (nopObserver) LockWaited(Outcome, time.Duration) {}

// TracerName is the instrumentation name of the spans Locks starts.
const TracerName = "github.com/batonhq/baton/sidecar/namedlock"

// The span of a lock wait and its attributes. The lock's name is a span
// attribute, never a metric label.
const (
	SpanLockWait = "baton.lock.wait"

	AttrLockName    = attribute.Key("baton.lock.name")
	AttrLockSession = attribute.Key("baton.lock.session")
	AttrLockOutcome = attribute.Key("baton.lock.outcome")
	// AttrFencingToken is the key of a fencing token, the same as a
	// task's (workqueue.AttrFencingToken), so that one query finds both.
	AttrFencingToken = attribute.Key("baton.task.fencing_token")
)

// lockWait is one traced and measured Lock or TryLock.
type lockWait struct {
	l     *Locks
	ctx   context.Context // carries the span
	span  trace.Span
	start time.Time
}

// startWait starts the span SpanLockWait, child of ctx's span (the RPC),
// with the lock's name and session.
func (l *Locks) startWait(ctx context.Context, name string, sess *coord.Session) *lockWait {
	ctx, span := l.tracer.Start(ctx, SpanLockWait, trace.WithAttributes(AttrLockName.String(name), AttrLockSession.String(sess.ID)))
	return &lockWait{l: l, ctx: ctx, span: span, start: l.clock.Now()}
}

// end tells the observer and ends the span, with the fencing token when
// the lock was taken and err as the span's error.
func (w *lockWait) end(outcome Outcome, token int64, err error) {
	w.l.observer.LockWaited(outcome, w.l.clock.Since(w.start))
	w.span.SetAttributes(AttrLockOutcome.String(string(outcome)))
	if token > 0 {
		w.span.SetAttributes(AttrFencingToken.Int64(token))
	}
	if err != nil {
		w.span.RecordError(err)
		w.span.SetStatus(codes.Error, err.Error())
	}
	w.span.End()
}
