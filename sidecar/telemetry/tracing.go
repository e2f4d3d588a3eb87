package telemetry

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TraceConfig names the process in its spans' resource. OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES override these.
type TraceConfig struct {
	// ServiceName is service.name. Default "baton".
	ServiceName string
	// ServiceVersion is service.version.
	ServiceVersion string
	// InstanceID is service.instance.id (the sidecar's worker id).
	InstanceID string
}

// TracingEnabled reports whether the OTEL_* variables ask for traces, and
// checks them: traces are on when OTEL_TRACES_EXPORTER is "otlp", or when
// it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true and
// OTEL_TRACES_EXPORTER=none turn them off.
func TracingEnabled() (bool, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exp)
	}
}

// NewTracerProvider builds the process's tracer provider from the standard
// OTEL_* variables: an OTLP exporter (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL
// grpc or http/protobuf, default http/protobuf; endpoint, headers,
// certificates and timeout as the OpenTelemetry spec says) behind a batch
// span processor, the sampler of OTEL_TRACES_SAMPLER (default
// parentbased_always_on) made quiet (see QuietSpans), and a resource from
// cfg, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
// When the variables do not ask for traces (see TracingEnabled) it returns
// a no-op provider: nothing is recorded, exported or logged. Call shutdown
// before exiting to flush the spans in the batch; it waits at most as long
// as ctx allows.
func NewTracerProvider(ctx context.Context, cfg TraceConfig) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	nothing := func(context.Context) error { return nil }
	on, err := TracingEnabled()
	if err != nil || !on {
		return noop.NewTracerProvider(), nothing, err
	}
	sampler, err := samplerFromEnv()
	if err != nil {
		return noop.NewTracerProvider(), nothing, err
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return noop.NewTracerProvider(), nothing, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported (grpc or http/protobuf)", proto)
	}
	if err != nil {
		return noop.NewTracerProvider(), nothing, fmt.Errorf("otlp exporter: %w", err)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "baton"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	if cfg.InstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.InstanceID))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return noop.NewTracerProvider(), nothing, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	p := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Quiet(sampler)),
	)
	return p, p.Shutdown, nil
}

// samplerFromEnv is the sampler OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG name.
func samplerFromEnv() (sdktrace.Sampler, error) {
	name := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER"))
	arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio between 0 and 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: %q is not supported", name)
}

// QuietSpans are the server spans that are dropped when they would start a
// trace: idle long polls, session streams, heartbeats and health
// checks of callers that are not tracing. A worker in a trace (its call
// carries a traceparent) still gets them recorded. The span that matters,
// the claim, belongs to the task's own trace.
var QuietSpans = []string{
	"baton.v1.TaskService/Next",
	"baton.v1.TaskService/Attach",
	"baton.v1.TaskService/Heartbeat",
	"baton.v1.ConfigService/Watch",
	"grpc.health.v1.Health/Check",
	"grpc.health.v1.Health/Watch",
	"grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// Quiet wraps base so that root spans named in QuietSpans are dropped.
func Quiet(base sdktrace.Sampler) sdktrace.Sampler {
	q := make(map[string]bool, len(QuietSpans))
	for _, n := range QuietSpans {
		q[n] = true
	}
	return quietSampler{base: base, quiet: q}
}

type quietSampler struct {
	base  sdktrace.Sampler
	quiet map[string]bool
}

func (s quietSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	parent := trace.SpanContextFromContext(p.ParentContext)
	if !parent.IsValid() && s.quiet[p.Name] {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: parent.TraceState()}
	}
	return s.base.ShouldSample(p)
}

func (s quietSampler) Description() string { return "Quiet{" + s.base.Description() + "}" }
