package workqueue

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"
)

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
		cl.conflicts = append(cl.conflicts, conflictEvent{at: d.cfg.Now(), id: id})
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
