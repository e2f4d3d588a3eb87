package workqueue

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation name of the dispatcher's spans.
const TracerName = "github.com/batonhq/baton/sidecar/workqueue"

// Span names and attribute keys. The attribute keys are those the Python
// client puts on its task span, so one query finds a task's spans on both
// sides. Payloads are never recorded.
const (
	SpanClaim    = "baton.claim"
	SpanRequeue  = "baton.requeue"
	SpanComplete = "baton.complete"
	SpanFail     = "baton.fail"
	SpanRelease  = "baton.release"

	AttrTaskID       = attribute.Key("baton.task.id")
	AttrTaskQueue    = attribute.Key("baton.task.queue")
	AttrTaskAttempt  = attribute.Key("baton.task.attempt")
	AttrFencingToken = attribute.Key("baton.task.fencing_token")
	AttrTaskState    = attribute.Key("baton.task.state")
	AttrBatch        = attribute.Key("baton.task.batch")
	AttrConflicts    = attribute.Key("baton.claim.conflicts")
	AttrReason       = attribute.Key("baton.reason")
)

var traceContext propagation.TraceContext

// ParseTraceparent returns the span context of a W3C traceparent; it is
// invalid when tp is empty or malformed.
func ParseTraceparent(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	ctx := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	return trace.SpanContextFromContext(ctx)
}

// FormatTraceparent returns the W3C traceparent of sc, or "" when sc is
// invalid.
func FormatTraceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	return c["traceparent"]
}

func taskAttrs(id string, st Status, token int64) []attribute.KeyValue {
	a := []attribute.KeyValue{
		AttrTaskID.String(id),
		AttrTaskQueue.String(st.Queue),
		AttrTaskAttempt.Int(int(st.Attempt)),
		AttrFencingToken.Int64(token),
	}
	if st.Batch != "" {
		a = append(a, AttrBatch.String(st.Batch))
	}
	return a
}

// startInTrace starts a span that belongs to the task's trace: its parent
// is parent (the task's claim or submit span) when valid, linked to ctx's
// span when that is a recorded span of another trace (the RPC that led
// here). Without parent, the span is a child of ctx's span when that is
// sampled, and otherwise starts a trace of its own (so a task submitted
// without tracing still gets one from its claim on).
func (d *Dispatcher) startInTrace(ctx context.Context, parent trace.SpanContext, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cur := trace.SpanContextFromContext(ctx)
	switch {
	case parent.IsValid():
		if cur.TraceID() != parent.TraceID() {
			if cur.IsSampled() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: cur}))
			}
			ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
		}
	case !cur.IsSampled():
		opts = append(opts, trace.WithNewRoot())
	}
	return d.tracer.Start(ctx, name, opts...)
}

// endSpan ends span, recording the task's state and err.
func endSpan(span trace.Span, state State, err error) {
	if state != "" {
		span.SetAttributes(AttrTaskState.String(string(state)))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
