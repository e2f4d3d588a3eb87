package batoncli

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/urfave/cli/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// tracerProvider builds the command's tracer provider from the OTEL_*
// variables (a no-op one when they ask for no traces) and returns a
// function that flushes and stops it, waiting at most 5s. Export errors go
// to log, at most one a minute.
func tracerProvider(c *cli.Context, log *slog.Logger, cfg telemetry.TraceConfig) (trace.TracerProvider, func(), error) {
	cfg.ServiceVersion = Version
	tp, shutdown, err := telemetry.NewTracerProvider(c.Context, cfg)
	if err != nil {
		return nil, nil, err
	}
	if on, _ := telemetry.TracingEnabled(); on {
		// The OpenTelemetry SDK reports export failures through its global
		// error handler; the binary is the one place that sets it.
		otel.SetErrorHandler(&rateLimitedErrors{log: log, every: time.Minute})
		log.Debug("tracing on", "service", cfg.ServiceName)
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}, nil
}

// rateLimitedErrors logs the SDK's errors (a collector that is away fails
// every export) at most once per every, counting the ones left out.
type rateLimitedErrors struct {
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (h *rateLimitedErrors) Handle(err error) {
	h.mu.Lock()
	now := time.Now()
	if !h.last.IsZero() && now.Sub(h.last) < h.every {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	n := h.suppressed
	h.last, h.suppressed = now, 0
	h.mu.Unlock()
	h.log.Warn("opentelemetry: exporting traces failed", "err", err, "suppressed_since_last", n)
}
