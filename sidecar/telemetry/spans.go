package telemetry

import (
	"context"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation name of the spans this package starts.
const TracerName = "github.com/batonhq/baton/sidecar/telemetry"

// Span names and attributes of locks and configuration. Lock and config
// names are span attributes, never metric labels.
const (
	SpanLockWait      = "baton.lock.wait"
	SpanConfigDeliver = "baton.config.deliver"

	AttrLockName       = attribute.Key("baton.lock.name")
	AttrLockSession    = attribute.Key("baton.lock.session")
	AttrLockOutcome    = attribute.Key("baton.lock.outcome")
	AttrConfigName     = attribute.Key("baton.config.name")
	AttrConfigRevision = attribute.Key("baton.config.revision")
)

// LockOutcome is how a wait for a lock ended: the outcome label of
// baton_lock_wait_seconds.
type LockOutcome string

// The lock outcomes.
const (
	LockAcquired  LockOutcome = "acquired"  // Lock or TryLock got the lock
	LockTimeout   LockOutcome = "timeout"   // Lock's wait ended without it (DEADLINE_EXCEEDED)
	LockBusy      LockOutcome = "busy"      // TryLock found it held (ABORTED)
	LockCancelled LockOutcome = "cancelled" // the caller went away (session closed, call cancelled)
	LockError     LockOutcome = "error"     // etcd failed or the request was bad
)

// LockOutcomes lists every LockOutcome.
var LockOutcomes = []LockOutcome{LockAcquired, LockTimeout, LockBusy, LockCancelled, LockError}

// ObserveLockWait records one wait for a lock, of any lock, in
// baton_lock_wait_seconds{outcome}. Use it when the wait is not traced;
// LockWait.End calls it.
func (m *Metrics) ObserveLockWait(wait time.Duration, outcome LockOutcome) {
	if m == nil {
		return
	}
	m.lockWait.WithLabelValues(string(outcome)).Observe(wait.Seconds())
}

// LockWait is one traced and measured wait for a lock: see StartLockWait.
type LockWait struct {
	span  trace.Span
	m     *Metrics
	start time.Time
}

// StartLockWait starts measuring a Lock or TryLock call's wait for the
// named lock: a span SpanLockWait, child of ctx's span (the RPC), with the
// lock name and session as attributes. tp and m may be nil. Call End once
// when the wait ends, however it ends. The returned ctx carries the span,
// so log lines written with it carry its trace id.
func StartLockWait(ctx context.Context, tp trace.TracerProvider, m *Metrics, lock, session string) (context.Context, *LockWait) {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	attrs := []attribute.KeyValue{AttrLockName.String(lock)}
	if session != "" {
		attrs = append(attrs, AttrLockSession.String(session))
	}
	ctx, span := tp.Tracer(TracerName).Start(ctx, SpanLockWait, trace.WithAttributes(attrs...))
	return ctx, &LockWait{span: span, m: m, start: time.Now()}
}

// End ends the wait: it observes baton_lock_wait_seconds with outcome and
// ends the span, with the fencing token when the lock was acquired
// (token > 0) and err recorded as the span's error when not nil.
func (w *LockWait) End(outcome LockOutcome, token int64, err error) {
	w.m.ObserveLockWait(time.Since(w.start), outcome)
	w.span.SetAttributes(AttrLockOutcome.String(string(outcome)))
	if token > 0 {
		w.span.SetAttributes(workqueue.AttrFencingToken.Int64(token))
	}
	if err != nil {
		w.span.RecordError(err)
		w.span.SetStatus(codes.Error, err.Error())
	}
	w.span.End()
}

// StartConfigDelivery starts the span SpanConfigDeliver of sending one
// revision of the named configuration document to a worker's Watch stream.
// Each delivery starts a trace of its own, linked to ctx's span (the Watch
// call, which may stay open for hours and is only exported when it ends),
// so deliveries show up as they happen. tp may be nil. End the span after
// the send, recording a send error with RecordError.
func StartConfigDelivery(ctx context.Context, tp trace.TracerProvider, name string, revision int64) (context.Context, trace.Span) {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(AttrConfigName.String(name), AttrConfigRevision.Int64(revision)),
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return tp.Tracer(TracerName).Start(ctx, SpanConfigDeliver, opts...)
}
