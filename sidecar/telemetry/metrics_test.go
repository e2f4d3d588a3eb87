package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// family gathers m's registry and returns the named family.
func family(t *testing.T, m *telemetry.Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestLockWait checks the lock-wait histogram: the metric by outcome only,
// every outcome present from the start. (The span is namedlock's.)
func TestLockWait(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Version: "test"})
	var _ namedlock.Observer = m
	m.LockWaited(namedlock.OutcomeAcquired, 30*time.Millisecond)
	m.LockWaited(namedlock.OutcomeAcquired, time.Millisecond)
	m.LockWaited(namedlock.OutcomeTimeout, time.Second)

	f := family(t, m, "baton_lock_wait_seconds")
	if f == nil {
		t.Fatal("no baton_lock_wait_seconds")
	}
	counts := map[string]uint64{}
	for _, s := range f.GetMetric() {
		l := labelsOf(s)
		if len(l) != 1 {
			t.Errorf("labels %v, want outcome only", l)
		}
		counts[l["outcome"]] = s.GetHistogram().GetSampleCount()
	}
	want := map[string]uint64{"acquired": 2, "timeout": 1, "busy": 0, "cancelled": 0, "error": 0}
	for k, v := range want {
		if c, ok := counts[k]; !ok || c != v {
			t.Errorf("baton_lock_wait_seconds{outcome=%q} count %d (present %v), want %d", k, c, ok, v)
		}
	}
}

// TestConfigDelivery: each delivery is a trace of its own, linked to the
// Watch call's span.
func TestConfigDelivery(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	ctx, watch := tp.Tracer("test").Start(context.Background(), "baton.v1.ConfigService/Watch")
	_, span := telemetry.StartConfigDelivery(ctx, tp, "tts", 17)
	span.End()
	watch.End()
	d := rec.Ended()[0]
	if d.Name() != telemetry.SpanConfigDeliver || d.Parent().IsValid() || d.SpanContext().TraceID() == watch.SpanContext().TraceID() {
		t.Errorf("delivery span %s parent %v trace %v", d.Name(), d.Parent(), d.SpanContext().TraceID())
	}
	if len(d.Links()) != 1 || d.Links()[0].SpanContext.SpanID() != watch.SpanContext().SpanID() {
		t.Errorf("delivery links %v, want the Watch span", d.Links())
	}
	attrs := map[string]string{}
	for _, a := range d.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["baton.config.name"] != "tts" || attrs["baton.config.revision"] != "17" {
		t.Errorf("attributes %v", attrs)
	}
	// Without a tracer provider it is a no-op.
	_, span = telemetry.StartConfigDelivery(context.Background(), nil, "tts", 18)
	span.End()
}

// TestNilMetrics: every method of a nil *Metrics does nothing.
func TestNilMetrics(t *testing.T) {
	var m *telemetry.Metrics
	m.Queues("q")
	m.TaskClaimed("q", time.Second)
	m.ClaimConflict("q")
	m.TaskCompleted("q")
	m.TaskFailed("q", workqueue.ReasonError)
	m.TaskRequeued("q", workqueue.ReasonReleased)
	m.TaskDead("q")
	m.ClaimEnded("q", workqueue.OutcomeCompleted, time.Second)
	m.QueueDepth("q", 1, 2, 3)
	m.LockWaited(namedlock.OutcomeBusy, time.Second)
	if m.Registry() != nil || m.EtcdDialOptions() != nil || m.Watch(telemetry.SidecarStats{}) != nil {
		t.Error("nil Metrics returned something")
	}
}

// TestQueueMetrics: the observer methods land in the right series, and a
// queue's series exist at zero before any event.
func TestQueueMetrics(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.MetricsConfig{})
	m.Queues("tts")
	if f := family(t, m, "baton_queue_tasks_requeued_total"); f == nil || len(f.GetMetric()) != len(workqueue.Reasons) {
		t.Fatalf("requeued series before any event: %v", f)
	}
	m.TaskClaimed("tts", 1500*time.Millisecond)
	m.TaskFailed("tts", workqueue.ReasonTimeout)
	m.TaskRequeued("tts", workqueue.ReasonTimeout)
	m.QueueDepth("tts", 7, 1, 2)
	for name, want := range map[string]float64{"baton_queue_tasks_claimed_total": 1, "baton_queue_dispatch_latency_seconds": 1.5} {
		f := family(t, m, name)
		var got float64
		for _, s := range f.GetMetric() {
			got += s.GetCounter().GetValue() + s.GetHistogram().GetSampleSum()
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, s := range family(t, m, "baton_queue_depth_tasks").GetMetric() {
		l := labelsOf(s)
		want := map[string]float64{"pending": 7, "delayed": 1, "claimed": 2}[l["state"]]
		if s.GetGauge().GetValue() != want || l["queue"] != "tts" {
			t.Errorf("depth %v = %v", l, s.GetGauge().GetValue())
		}
	}
	if err := m.Watch(telemetry.SidecarStats{SessionsOpen: func() int { return 3 }}); err != nil {
		t.Fatal(err)
	}
	if f := family(t, m, "baton_worker_sessions"); f == nil || f.GetMetric()[0].GetGauge().GetValue() != 3 {
		t.Errorf("baton_worker_sessions: %v", f)
	}
	if err := m.Watch(telemetry.SidecarStats{SessionsOpen: func() int { return 3 }}); err == nil {
		t.Error("a second Watch registered the same metrics again")
	}
}
