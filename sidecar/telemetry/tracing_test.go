package telemetry_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}

// env unsets every OTEL_* variable for the test, then sets kv.
func env(t *testing.T, kv ...string) {
	for _, k := range otelVars {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

func TestTracingOffWithoutVariables(t *testing.T) {
	for _, kv := range [][]string{
		nil,
		{"OTEL_SERVICE_NAME", "x"}, // names, but asks for no export
		{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"},
		{"OTEL_SDK_DISABLED", "true", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"},
	} {
		env(t, kv...)
		tp, shutdown, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{})
		if err != nil {
			t.Fatalf("%v: %v", kv, err)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "x")
		if span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("%v: tracing is on", kv)
		}
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

func TestTracingBadVariables(t *testing.T) {
	for _, c := range []struct{ kv []string }{
		{[]string{"OTEL_TRACES_EXPORTER", "zipkin"}},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER", "sometimes"}},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "2"}},
	} {
		env(t, c.kv...)
		_, _, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{})
		// The error names the variable that is wrong.
		if err == nil || !strings.HasPrefix(err.Error(), "OTEL_") {
			t.Errorf("%v: %v, want an error naming the variable", c.kv, err)
		}
	}
}

// TestTracingExportsOTLP exports over both protocols to a real OTLP
// receiver, with the resource from the config and the variables.
func TestTracingExportsOTLP(t *testing.T) {
	r := sidecartest.StartOTLPReceiver(t)
	for _, proto := range []string{"http/protobuf", "grpc"} {
		ep := r.HTTPEndpoint()
		if proto == "grpc" {
			ep = r.GRPCEndpoint()
		}
		env(t, "OTEL_EXPORTER_OTLP_ENDPOINT", ep, "OTEL_EXPORTER_OTLP_PROTOCOL", proto, "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
		tp, shutdown, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{ServiceName: "svc-" + proto, InstanceID: "w1"})
		if err != nil {
			t.Fatal(err)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "op "+proto)
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		r.WaitFor(t, 10*time.Second, func(spans []sidecartest.Span) bool {
			for _, s := range spans {
				if s.Name == "op "+proto && s.Service == "svc-"+proto {
					return true
				}
			}
			return false
		})
	}
}

func TestQuietSampler(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(telemetry.Quiet(sdktrace.ParentBased(sdktrace.AlwaysSample()))))
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer("t")
	_, idle := tr.Start(context.Background(), "baton.v1.TaskService/Next")
	if idle.SpanContext().IsSampled() {
		t.Error("a root Next span is sampled")
	}
	ctx, parent := tr.Start(context.Background(), "worker loop")
	_, traced := tr.Start(ctx, "baton.v1.TaskService/Next")
	if !traced.SpanContext().IsSampled() {
		t.Error("a Next span in a trace is not sampled")
	}
	_, other := tr.Start(context.Background(), "baton.v1.TaskService/Complete")
	if !other.SpanContext().IsSampled() {
		t.Error("a root Complete span is not sampled")
	}
	for _, s := range []trace.Span{idle, traced, parent, other} {
		s.End()
	}
}
