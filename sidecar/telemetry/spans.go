package telemetry

import (
	"context"
	"time"

	"github.com/batonhq/baton/sidecar/namedlock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation name of the spans this package starts.
const TracerName = "github.com/batonhq/baton/sidecar/telemetry"

// The span of configuration delivery and its attributes. Config names are
// span attributes, never metric labels. (The lock wait's span,
// baton.lock.wait, is started by package sidecar/namedlock.)
const (
	SpanConfigDeliver = "baton.config.deliver"

	AttrConfigName     = attribute.Key("baton.config.name")
	AttrConfigRevision = attribute.Key("baton.config.revision")
)

// LockWaited records one Lock or TryLock, of any lock, in
// baton_lock_wait_seconds{outcome}: it implements namedlock.Observer.
func (m *Metrics) LockWaited(outcome namedlock.Outcome, waited time.Duration) {
	if m == nil {
		return
	}
	m.lockWait.WithLabelValues(string(outcome)).Observe(waited.Seconds())
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
