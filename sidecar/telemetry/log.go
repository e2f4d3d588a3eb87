package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps h so that a record logged with a context that carries a
// valid span (slog's *Context methods) gets trace_id and span_id
// attributes, as W3C hex strings, to find the trace of a log line. Records
// without a span are passed on unchanged. Under WithGroup the two
// attributes land in the group, like any attribute added at that point.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ h slog.Handler }

func (t traceHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.h.Enabled(ctx, l) }

func (t traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.h.Handle(ctx, r)
}

func (t traceHandler) WithAttrs(as []slog.Attr) slog.Handler { return traceHandler{t.h.WithAttrs(as)} }
func (t traceHandler) WithGroup(name string) slog.Handler    { return traceHandler{t.h.WithGroup(name)} }

type logAttrsKey struct{}

// WithLogAttrs returns a context whose records, logged through a handler
// wrapped by CallerHandler, carry attrs as well (after those already on
// ctx). The socket server uses it to put the caller's uid and pid on every
// line logged while serving a call.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return context.WithValue(ctx, logAttrsKey{}, append(prev[:len(prev):len(prev)], attrs...))
}

// CallerHandler wraps h so that a record logged with a context made by
// WithLogAttrs (slog's *Context methods) gets that context's attributes.
// sidecar.New wraps its logger with it, so that library users get the
// caller on every line without wrapping anything themselves.
func CallerHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(callerHandler); ok {
		return h
	}
	return callerHandler{h}
}

type callerHandler struct{ h slog.Handler }

func (c callerHandler) Enabled(ctx context.Context, l slog.Level) bool { return c.h.Enabled(ctx, l) }

func (c callerHandler) Handle(ctx context.Context, r slog.Record) error {
	if as, _ := ctx.Value(logAttrsKey{}).([]slog.Attr); len(as) > 0 {
		r = r.Clone()
		r.AddAttrs(as...)
	}
	return c.h.Handle(ctx, r)
}

func (c callerHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return callerHandler{c.h.WithAttrs(as)}
}
func (c callerHandler) WithGroup(name string) slog.Handler { return callerHandler{c.h.WithGroup(name)} }
