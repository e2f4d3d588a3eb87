package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/durationpb"
)

// scrape reads a sidecar's /metrics over HTTP.
func scrape(t *testing.T, sc *sidecartest.Sidecar) map[string]*dto.MetricFamily {
	t.Helper()
	text := get(t, sc, "/metrics", http.StatusOK)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// get fetches path from the sidecar's admin server and checks the status.
func get(t *testing.T, sc *sidecartest.Sidecar, path string, status int) string {
	t.Helper()
	code, body := fetch(t, sc, path)
	if code != status {
		t.Fatalf("GET %s: %d, want %d\n%s", path, code, status, body)
	}
	return body
}

func fetch(t *testing.T, sc *sidecartest.Sidecar, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + sc.AdminAddr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// value returns the value of the sample of family name whose labels
// include labels (name=value pairs); for a histogram, its count. ok is
// false when there is no such sample.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func nextIn(t *testing.T, sc *sidecartest.Sidecar, queue, session string) *batonv1.Task {
	t.Helper()
	resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Queues: []string{queue}, Wait: durationpb.New(10 * time.Second), Session: session}))
	if err != nil || resp.Msg.Task == nil {
		t.Fatalf("next: %v %v", err, resp)
	}
	return resp.Msg.Task
}

// TestMetricsAfterWorkload runs a known workload through a real sidecar and
// checks the counts its /metrics reports, then that every query of the
// Grafana dashboard names a metric this sidecar exports.
func TestMetricsAfterWorkload(t *testing.T) {
	t.Parallel()
	const q = "m"
	sc, _ := start(t, sidecar.Config{Queues: []string{q}, AdminAddr: "127.0.0.1:0", Queue: workqueue.Config{DepthInterval: 50 * time.Millisecond}})
	ctx := context.Background()
	var specs []*batonv1.TaskSpec
	for i := range 12 {
		specs = append(specs, &batonv1.TaskSpec{Id: fmt.Sprintf("t%02d", i), Queue: q, MaxAttempts: 3, Payload: payload(t, map[string]any{"n": i})})
	}
	submit(t, sc, specs...)

	for range 5 { // t00..t04: completed
		task := nextIn(t, sc, q, "")
		if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // t05, t06: failed permanently, DEAD
		task := nextIn(t, sc, q, "")
		if _, err := sc.Client.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "bad input", Permanent: true})); err != nil {
			t.Fatal(err)
		}
	}
	// t07: failed, retried in an hour (delayed meanwhile).
	task := nextIn(t, sc, q, "")
	if _, err := sc.Client.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "busy", RetryAfter: durationpb.New(time.Hour)})); err != nil {
		t.Fatal(err)
	}
	// t08: released (no attempt used), back in the queue.
	task = nextIn(t, sc, q, "")
	if _, err := sc.Client.Tasks.Release(ctx, connect.NewRequest(&batonv1.ReleaseRequest{Claim: task.Claim})); err != nil {
		t.Fatal(err)
	}
	// One more (t08 again or t09) claimed under a worker session that then
	// closes: back in the queue with the attempt counted.
	sctx, closeSession := context.WithCancel(ctx)
	stream, err := sc.Client.Tasks.Attach(sctx, connect.NewRequest(&batonv1.AttachRequest{Process: "metrics-test"}))
	if err != nil || !stream.Receive() {
		t.Fatalf("attach: %v %v", err, stream.Err())
	}
	nextIn(t, sc, q, stream.Msg().Session)
	fams := scrape(t, sc)
	if v, _ := value(fams, "baton_worker_sessions"); v != 1 {
		t.Errorf("baton_worker_sessions = %v with one session open", v)
	}
	if v, _ := value(fams, "baton_queue_held_tasks"); v != 1 {
		t.Errorf("baton_queue_held_tasks = %v with one claim held", v)
	}
	closeSession()
	stream.Close()

	// The session's claim returns when the sidecar sees the stream end,
	// and the depth sample catches up with the last change.
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"baton_queue_tasks_claimed_total", []string{"queue", q}, 10},
		{"baton_queue_tasks_completed_total", []string{"queue", q}, 5},
		{"baton_queue_tasks_failed_total", []string{"queue", q, "reason", "error"}, 3},
		{"baton_queue_tasks_failed_total", []string{"queue", q, "reason", "session_closed"}, 1},
		{"baton_queue_tasks_failed_total", []string{"queue", q, "reason", "timeout"}, 0},
		{"baton_queue_tasks_requeued_total", []string{"queue", q, "reason", "error"}, 1},
		{"baton_queue_tasks_requeued_total", []string{"queue", q, "reason", "released"}, 1},
		{"baton_queue_tasks_requeued_total", []string{"queue", q, "reason", "session_closed"}, 1},
		{"baton_queue_tasks_dead_total", []string{"queue", q}, 2},
		{"baton_queue_claim_conflicts_total", []string{"queue", q}, 0},
		{"baton_queue_dispatch_latency_seconds", []string{"queue", q}, 10},
		{"baton_queue_task_run_seconds", []string{"queue", q, "outcome", "completed"}, 5},
		{"baton_queue_task_run_seconds", []string{"queue", q, "outcome", "failed"}, 3},
		{"baton_queue_task_run_seconds", []string{"queue", q, "outcome", "released"}, 1},
		{"baton_queue_task_run_seconds", []string{"queue", q, "outcome", "lost"}, 1},
		{"baton_queue_depth_tasks", []string{"queue", q, "state", "pending"}, 4}, // t08..t11: released, session's, never claimed
		{"baton_queue_depth_tasks", []string{"queue", q, "state", "delayed"}, 1}, // t07
		{"baton_queue_depth_tasks", []string{"queue", q, "state", "claimed"}, 0},
		{"baton_queue_held_tasks", nil, 0},
		{"baton_worker_sessions", nil, 0},
		{"baton_worker_attaches_total", nil, 1},
		{"baton_lease_lost_total", nil, 0},
		{"baton_lease_keepalive_failures_total", nil, 0},
		{"baton_lock_wait_seconds", []string{"outcome", "acquired"}, 0},
	}
	var diff []string
	waitFor(t, 10*time.Second, "metrics of the workload", func() bool {
		fams = scrape(t, sc)
		diff = diff[:0]
		for _, w := range want {
			if v, ok := value(fams, w.name, w.labels...); !ok || v != w.v {
				diff = append(diff, fmt.Sprintf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.v))
			}
		}
		return len(diff) == 0
	})
	for _, d := range diff {
		t.Error(d)
	}
	if v, ok := value(fams, "baton_etcd_round_trip_seconds", "method", "Txn", "outcome", "ok"); !ok || v < 10 {
		t.Errorf("baton_etcd_round_trip_seconds{method=Txn,outcome=ok} count = %v, want at least one per claim", v)
	}
	if v, _ := value(fams, "baton_lease_keepalive_age_seconds"); v <= 0 || v > 10 {
		t.Errorf("baton_lease_keepalive_age_seconds = %v, want under the 10s TTL", v)
	}
	if _, ok := value(fams, "baton_build_info"); !ok {
		t.Error("no baton_build_info")
	}
	// etcd's database against its quota (the default 2 GiB).
	if v, _ := value(fams, "baton_etcd_db_size_bytes"); v <= 0 || v >= 2<<30 {
		t.Errorf("baton_etcd_db_size_bytes = %v, want etcd's database size", v)
	}
	if v, _ := value(fams, "baton_etcd_quota_bytes"); v != 2<<30 {
		t.Errorf("baton_etcd_quota_bytes = %v, want 2 GiB (the default --etcd-quota-bytes)", v)
	}
	// Bounded labels only: never a task id.
	allowed := map[string]bool{"queue": true, "reason": true, "outcome": true, "state": true, "method": true, "version": true, "go_version": true, "rpc": true, "action": true}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.HasPrefix(name, "baton_") && !allowed[l.GetName()] {
					t.Errorf("%s has label %s", name, l.GetName())
				}
				if strings.HasPrefix(l.GetValue(), "t0") || strings.HasPrefix(l.GetValue(), "t1") {
					t.Errorf("%s has a task id as a label value: %s=%s", name, l.GetName(), l.GetValue())
				}
			}
		}
	}

	t.Run("dashboard", func(t *testing.T) {
		exported := map[string]bool{}
		for name, f := range fams {
			exported[name] = true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = true
				}
			}
		}
		exprs := dashboardExprs(t, "../deploy/observability/grafana/dashboards/baton.json")
		if len(exprs) < 6 {
			t.Fatalf("dashboard has %d queries", len(exprs))
		}
		metric := regexp.MustCompile(`\bbaton_[a-z0-9_]+`)
		used := map[string]bool{}
		for _, e := range exprs {
			names := metric.FindAllString(e, -1)
			if len(names) == 0 {
				t.Errorf("query %q names no baton metric", e)
			}
			for _, n := range names {
				used[n] = true
				if !exported[n] {
					t.Errorf("query %q names %s, which the sidecar does not export", e, n)
				}
			}
		}
		// The panels the issue asks for.
		for _, n := range []string{"baton_queue_depth_tasks", "baton_queue_tasks_completed_total", "baton_queue_claim_conflicts_total",
			"baton_queue_dispatch_latency_seconds_bucket", "baton_lock_wait_seconds_bucket", "baton_worker_sessions"} {
			if !used[n] {
				t.Errorf("the dashboard does not show %s", n)
			}
		}
	})
}

// TestReadyzFollowsEtcd stops a real etcd under a sidecar: /readyz and the
// gRPC health service turn not ready, and ready again when etcd is back;
// /healthz stays ok throughout.
func TestReadyzFollowsEtcd(t *testing.T) {
	// Stopping an embedded etcd waits for its request timeout (7s) and the
	// client's reconnect backoff adds seconds: run beside the other test
	// that restarts an etcd of its own.
	t.Parallel()
	etcd := restartableEtcd(t)
	sc := sidecartest.StartSidecar(t, etcd.addr, sidecartest.Namespace(t), sidecar.Config{
		Queues: []string{"r"}, AdminAddr: "127.0.0.1:0", TTL: 30 * time.Second,
	})
	health := healthClient(t, sc.Socket)
	ready := func() bool {
		code, _ := fetch(t, sc, "/readyz")
		return code == http.StatusOK
	}
	waitFor(t, 20*time.Second, "ready at start", ready)
	if s := health.check(t); s != "SERVING" {
		t.Errorf("gRPC health with etcd up: %s", s)
	}

	etcd.stop(t)
	waitFor(t, 20*time.Second, "not ready with etcd stopped", func() bool { return !ready() })
	_, body := fetch(t, sc, "/readyz")
	if !strings.Contains(body, "[-]etcd failed") || !strings.Contains(body, "[+]socket ok") {
		t.Errorf("/readyz with etcd stopped:\n%s", body)
	}
	get(t, sc, "/healthz", http.StatusOK)
	if s := health.check(t); s != "NOT_SERVING" {
		t.Errorf("gRPC health with etcd stopped: %s", s)
	}

	etcd.start(t)
	waitFor(t, 30*time.Second, "ready again with etcd back", ready)
	if s := health.check(t); s != "SERVING" {
		t.Errorf("gRPC health with etcd back: %s", s)
	}
	// The keepalive stream broke while etcd was away; the lease survived.
	fams := scrape(t, sc)
	if v, _ := value(fams, "baton_lease_keepalive_failures_total"); v < 1 {
		t.Errorf("baton_lease_keepalive_failures_total = %v after an etcd outage", v)
	}
	if v, _ := value(fams, "baton_etcd_round_trip_seconds", "method", "Range", "outcome", "error"); v < 1 {
		t.Errorf("no failed Range (the readiness probe) counted while etcd was away")
	}
}

// TestAdminAddrInUse: a sidecar whose admin address is taken fails to
// start, naming the address, and leaves no socket behind.
func TestAdminAddrInUse(t *testing.T) {
	t.Parallel()
	first, _ := start(t, sidecar.Config{AdminAddr: "127.0.0.1:0"})
	cfg := sidecar.Config{Queues: []string{"tts"}, AdminAddr: first.AdminAddr().String(), Socket: sidecartest.SocketPath(t)}
	cfg.Etcd.Endpoints, cfg.Etcd.Namespace = []string{endpoint}, sidecartest.Namespace(t)
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = sc.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "admin-addr "+cfg.AdminAddr) {
		t.Fatalf("run: %v, want an error naming admin-addr %s", err, cfg.AdminAddr)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := sidecar.New(sidecar.Config{Socket: cfg.Socket, AdminAddr: "9464"}); err == nil || !strings.HasPrefix(err.Error(), "admin-addr:") {
		t.Errorf("New with admin-addr 9464: %v, want an error naming admin-addr", err)
	}
}

// The dispatch latency is how long a task was ready before it was claimed
// (it read the claim's own time, about 0, once the claim was written by
// the scheduler: the claim now keeps when the task became ready).
func TestDispatchLatencyCountsTheWaitInTheQueue(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{AdminAddr: "127.0.0.1:0"})
	submit(t, sc, &batonv1.TaskSpec{Id: "waited", Payload: payload(t, map[string]any{})})
	time.Sleep(300 * time.Millisecond) // the task waits in the queue; not waiting for a condition
	if task := next(t, sc, 10*time.Second, ""); task == nil {
		t.Fatal("no task")
	}
	f := scrape(t, sc)["baton_queue_dispatch_latency_seconds"]
	if f == nil || len(f.GetMetric()) == 0 {
		t.Fatal("no dispatch latency")
	}
	if sum := f.GetMetric()[0].GetHistogram().GetSampleSum(); sum < 0.25 {
		t.Fatalf("dispatch latency sum %.3fs, want at least the 0.3s the task waited", sum)
	}
}
