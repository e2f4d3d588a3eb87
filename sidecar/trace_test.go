package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
)

// setOTLPEnv points the OTEL_* variables of this process (and of the
// processes it starts) at r over gRPC, with a short batch delay so spans
// arrive while the test runs.
func setOTLPEnv(t *testing.T, r *sidecartest.OTLPReceiver) {
	for _, kv := range [][2]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", r.GRPCEndpoint()},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
		{"OTEL_EXPORTER_OTLP_INSECURE", "true"},
		{"OTEL_BSP_SCHEDULE_DELAY", "100"},
		{"OTEL_TRACES_EXPORTER", ""},
		{"OTEL_TRACES_SAMPLER", ""},
		{"OTEL_SERVICE_NAME", ""},
		{"OTEL_RESOURCE_ATTRIBUTES", ""},
		{"OTEL_SDK_DISABLED", ""},
	} {
		t.Setenv(kv[0], kv[1]) // restored when the test ends
		if kv[1] == "" {
			os.Unsetenv(kv[0]) // set but empty is not the same as unset
		}
	}
}

// submitCLI runs `baton submit` in process, as the binary would.
func submitCLI(t *testing.T, ns, queue string, lines ...string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "batch.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := batoncli.Main(context.Background(), []string{"baton", "--endpoints", endpoint, "--namespace", ns, "submit", "--queue", queue, file},
		nil, &out, &errOut); code != 0 {
		t.Fatalf("baton submit: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// traceOf returns the spans of one trace.
func traceOf(spans []sidecartest.Span, traceID string) []sidecartest.Span {
	var out []sidecartest.Span
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	sidecartest.SortByStart(out)
	return out
}

// find returns the first span of service named name (a prefix when name
// ends in "*") whose attributes include want.
func find(spans []sidecartest.Span, service, name string, want map[string]string) (sidecartest.Span, bool) {
	for _, s := range spans {
		if s.Service != service {
			continue
		}
		if p, ok := strings.CutSuffix(name, "*"); ok && !strings.HasPrefix(s.Name, p) || !ok && s.Name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.Attrs[k] != v {
				match = false
			}
		}
		if match {
			return s, true
		}
	}
	return sidecartest.Span{}, false
}

// taskChain is the spans of one task's trace, submit to complete.
type taskChain struct {
	submit, claim, worker, completeRPC, complete sidecartest.Span
	trace                                        []sidecartest.Span
}

// waitChain waits for the spans of task id, the worker's span coming from
// workerService under workerSpan, and checks that they form one trace with
// the right parents: CLI submit → sidecar claim → worker → Complete RPC →
// complete.
func waitChain(t *testing.T, r *sidecartest.OTLPReceiver, id, workerService, workerSpan string) taskChain {
	t.Helper()
	task := map[string]string{"baton.task.id": id}
	var c taskChain
	// The Complete RPC's span ends after the complete span inside it, and
	// may be exported later: wait for it too.
	r.WaitFor(t, 30*time.Second, func(spans []sidecartest.Span) bool {
		var ok [5]bool
		c.claim, ok[0] = find(spans, "baton-sidecar", workqueue.SpanClaim, task)
		c.worker, ok[1] = find(spans, workerService, workerSpan, task)
		c.complete, ok[2] = find(spans, "baton-sidecar", workqueue.SpanComplete, task)
		for _, s := range spans {
			if ok[0] && s.SpanID == c.claim.ParentID {
				c.submit, ok[3] = s, true
			}
			if ok[2] && s.SpanID == c.complete.ParentID {
				ok[4] = true
			}
		}
		return ok[0] && ok[1] && ok[2] && ok[3] && ok[4]
	})
	c.trace = traceOf(r.Spans(), c.submit.TraceID)
	for _, s := range c.trace {
		if s.Name == "baton.v1.TaskService/Complete" && s.Service == "baton-sidecar" && s.SpanID == c.complete.ParentID {
			c.completeRPC = s
		}
	}
	if c.submit.Service != "baton-cli" || c.submit.Name != "baton.submit" || c.submit.ParentID != "" || c.submit.Kind != "PRODUCER" {
		t.Errorf("claim's parent is %+v, want the CLI's root baton.submit span", c.submit)
	}
	for name, s := range map[string]sidecartest.Span{"claim": c.claim, "worker": c.worker, "complete": c.complete} {
		if s.TraceID != c.submit.TraceID {
			t.Errorf("%s span in trace %s, want the submit's %s", name, s.TraceID, c.submit.TraceID)
		}
	}
	if c.claim.Attrs["baton.task.attempt"] != "1" || c.claim.Attrs["baton.task.queue"] == "" || c.claim.Attrs["baton.task.fencing_token"] == "" || c.claim.Kind != "CONSUMER" {
		t.Errorf("claim span attributes %v kind %s", c.claim.Attrs, c.claim.Kind)
	}
	if c.worker.ParentID != c.claim.SpanID {
		t.Errorf("worker span's parent %s, want the claim span %s", c.worker.ParentID, c.claim.SpanID)
	}
	if c.completeRPC.SpanID == "" || !descends(c.trace, c.completeRPC, c.worker.SpanID) {
		t.Errorf("Complete RPC span %+v, want a descendant of the worker span %s", c.completeRPC, c.worker.SpanID)
	}
	if c.complete.Attrs["baton.task.state"] != "DONE" {
		t.Errorf("complete span attributes %v", c.complete.Attrs)
	}
	for _, s := range c.trace {
		for k, v := range s.Attrs {
			if strings.Contains(v, "payload-marker") {
				t.Errorf("span %s attribute %s carries the payload: %q", s.Name, k, v)
			}
		}
	}
	return c
}

// descends reports whether s is a descendant of the span ancestor in
// spans (the worker's client span of a call may come in between).
func descends(spans []sidecartest.Span, s sidecartest.Span, ancestor string) bool {
	byID := map[string]sidecartest.Span{}
	for _, x := range spans {
		byID[x.SpanID] = x
	}
	for i := 0; i < len(spans) && s.ParentID != ""; i++ {
		if s.ParentID == ancestor {
			return true
		}
		s = byID[s.ParentID]
	}
	return false
}

func logChain(t *testing.T, c taskChain) {
	t.Helper()
	var b strings.Builder
	for _, s := range c.trace {
		fmt.Fprintf(&b, "  %-14s %-32s span %s parent %-16s %8.2fms\n", s.Service, s.Name, s.SpanID, s.ParentID, float64(s.Duration().Microseconds())/1000)
	}
	t.Logf("trace %s:\n%s", c.submit.TraceID, b.String())
}

// startTracedSidecar starts a sidecar whose tracer provider is built from
// the OTEL_* variables, as `baton sidecar` builds it.
func startTracedSidecar(t *testing.T, queues ...string) (*sidecartest.Sidecar, string) {
	tp, shutdown, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{ServiceName: "baton-sidecar"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	ns := sidecartest.Namespace(t)
	return sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: queues, TracerProvider: tp}), ns
}

// TestTraceSubmitToGoWorker: a Go worker continues the traceparent Next
// hands it and calls Complete inside its span (the otelconnect client
// interceptor sends the traceparent header).
func TestTraceSubmitToGoWorker(t *testing.T) {
	r := sidecartest.StartOTLPReceiver(t)
	setOTLPEnv(t, r)
	sc, ns := startTracedSidecar(t, "go")
	submitCLI(t, ns, "go", `{"id":"g1","text":"payload-marker"}`)

	tp, shutdown, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{ServiceName: "go-worker"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	ic, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tp), otelconnect.WithPropagator(propagation.TraceContext{}), otelconnect.WithoutMetrics())
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(sc.Socket, connect.WithInterceptors(ic))
	defer c.Close()
	resp, err := c.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Queues: []string{"go"}, Wait: durationpb.New(10 * time.Second)}))
	if err != nil || resp.Msg.Task == nil {
		t.Fatalf("next: %v %v", err, resp)
	}
	task := resp.Msg.Task
	parent := workqueue.ParseTraceparent(task.Traceparent)
	if !parent.IsSampled() {
		t.Fatalf("task traceparent %q is not a sampled trace context", task.Traceparent)
	}
	ctx, span := tp.Tracer("go-worker").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "work",
		trace.WithAttributes(workqueue.AttrTaskID.String(task.Id)))
	if _, err := c.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		t.Fatal(err)
	}
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	chain := waitChain(t, r, "g1", "go-worker", "work")
	if want := workqueue.FormatTraceparent(parent); !strings.Contains(want, chain.claim.SpanID) {
		t.Errorf("Next handed out traceparent %s; want the claim span %s", want, chain.claim.SpanID)
	}
	logChain(t, chain)
}

// TestTraceSubmitToPythonWorker runs the example TTS worker (Python, with
// opentelemetry-sdk and the OTLP gRPC exporter) against a traced sidecar:
// the CLI's submit span, the sidecar's claim, the worker's task and
// inference spans and the sidecar's complete are one trace.
func TestTraceSubmitToPythonWorker(t *testing.T) {
	python := os.Getenv("PYTHON")
	if python == "" {
		python = "python3"
	}
	check := exec.Command(python, "-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
	if out, err := check.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s lacks opentelemetry-sdk or opentelemetry-exporter-otlp-proto-grpc (.ci/run installs them): %v\n%s", python, err, out)
		if os.Getenv("BATON_REQUIRE_PYTHON_OTEL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	r := sidecartest.StartOTLPReceiver(t)
	setOTLPEnv(t, r)
	sc, ns := startTracedSidecar(t, "py")
	submitCLI(t, ns, "py", `{"uttid":"p1","syn_text":"payload-marker"}`)

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-m", "tts_worker", "--engine", "offline", "--queue", "py",
		"--out-dir", t.TempDir(), "--socket", sc.Socket, "--max-tasks", "1", "--wait", "10", "--heartbeat", "0")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=tts-worker",
		"PYTHONPATH="+filepath.Join(root, "clients", "python")+string(os.PathListSeparator)+filepath.Join(root, "examples", "python-worker"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("worker: %v\n%s", err, out)
	}
	var counts map[string]any
	last := strings.TrimSpace(string(out))
	last = last[strings.LastIndexByte(last, '\n')+1:]
	if json.Unmarshal([]byte(last), &counts) != nil || counts["completed"] != float64(1) {
		t.Fatalf("worker output:\n%s", out)
	}
	chain := waitChain(t, r, "p1", "tts-worker", "baton.task py")
	inference, ok := find(chain.trace, "tts-worker", "tts.synthesize", nil)
	if !ok || inference.ParentID != chain.worker.SpanID {
		t.Errorf("inference span %+v, want a child of the worker's task span %s", inference, chain.worker.SpanID)
	}
	// The worker's heartbeat joins the trace too, under its task span.
	if hb, ok := find(chain.trace, "baton-sidecar", "baton.v1.TaskService/Heartbeat", nil); !ok || hb.ParentID != chain.worker.SpanID {
		t.Errorf("Heartbeat RPC span %+v, want a child of the worker's task span", hb)
	}
	logChain(t, chain)
}

// syncBuffer is a bytes.Buffer safe for the sidecar's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsCarryTraceIDsNotPayloads: with a JSON logger wrapped by
// telemetry.LogHandler (as `baton sidecar --log-format json` builds it), the
// lines logged inside a task's spans carry that trace's id and the socket
// caller's uid and pid; no line carries the payload or the etcd password.
func TestLogsCarryTraceIDsAndCallerNotPayloads(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	tp := sdktrace.NewTracerProvider() // records and samples; exports nowhere
	defer tp.Shutdown(context.Background())
	ns := sidecartest.Namespace(t)
	cfg := sidecar.Config{Queues: []string{"tts"}, TracerProvider: tp, Logger: log}
	cfg.Etcd.Endpoints, cfg.Etcd.Namespace = []string{endpoint}, ns
	cfg.Etcd.Username, cfg.Etcd.Password = "baton", "secret-marker" // auth is off in the test etcd: accepted, unused
	sc := sidecartest.StartSidecar(t, endpoint, ns, cfg)

	ctx, submitSpan := tp.Tracer("test").Start(context.Background(), "submit")
	tpHeader := workqueue.FormatTraceparent(submitSpan.SpanContext())
	submit(t, sc, &batonv1.TaskSpec{Id: "l1", Traceparent: tpHeader, Payload: payload(t, map[string]any{"text": "payload-marker"})})
	submitSpan.End()
	task := next(t, sc, 10*time.Second, "")
	if _, err := sc.Client.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "boom", Permanent: true})); err != nil {
		t.Fatal(err)
	}
	if err := sc.Stop(); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, secret := range []string{"payload-marker", "secret-marker"} {
		if strings.Contains(text, secret) {
			t.Errorf("the log contains %q:\n%s", secret, text)
		}
	}
	want := submitSpan.SpanContext().TraceID().String()
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		if msg == "task claimed" || msg == "task failed" {
			seen[msg] = true
			if rec["trace_id"] != want || rec["span_id"] == nil || rec["task"] != "l1" {
				t.Errorf("%q logged with trace_id %v span_id %v, want trace %s", msg, rec["trace_id"], rec["span_id"], want)
			}
			// Logged while serving a socket call: the caller is named.
			if rec["peer_uid"] != float64(os.Getuid()) || rec["peer_pid"] != float64(os.Getpid()) {
				t.Errorf("%q logged with peer_uid %v peer_pid %v, want %d and %d", msg, rec["peer_uid"], rec["peer_pid"], os.Getuid(), os.Getpid())
			}
		}
		if msg == "sidecar serving" && rec["trace_id"] != nil {
			t.Errorf("a line outside any span has a trace id: %v", rec)
		}
	}
	if !seen["task claimed"] || !seen["task failed"] {
		t.Errorf("lines seen %v; log:\n%s", seen, text)
	}
}
