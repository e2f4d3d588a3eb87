package sidecar_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Hardening issue, "Audit": the operator's actions, done by the CLI
// directly on etcd, are logged ("operator action", with who did it) and
// counted (baton_operator_actions_total) by the elected scheduler; one
// written while no sidecar runs is logged by the next scheduler, and none
// is logged twice.
func TestOperatorActionsLoggedAndCountedByTheScheduler(t *testing.T) {
	t.Parallel()
	ns := sidecartest.Namespace(t)
	start := func(out *syncBuffer) *sidecartest.Sidecar {
		cfg := sidecar.Config{Queues: []string{"tts"}, AdminAddr: "127.0.0.1:0",
			Logger: slog.New(slog.NewJSONHandler(out, nil))}
		sc := sidecartest.StartSidecar(t, endpoint, ns, cfg)
		waitFor(t, 30*time.Second, "the sidecar is the scheduler", sc.Dispatcher().Leading)
		return sc
	}
	// The operator: the CLI's stores, recording as this process.
	cli := sidecartest.Client(t, endpoint, ns)
	aw, err := audit.NewWriter(cli.KV, audit.WriterConfig{Actor: audit.LocalActor("ops")})
	if err != nil {
		t.Fatal(err)
	}
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{Audit: aw})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	logged := func(out *syncBuffer, n int) []map[string]any {
		t.Helper()
		var lines []map[string]any
		waitFor(t, 20*time.Second, "operator actions logged", func() bool {
			lines = logLines(t, out, "operator action")
			return len(lines) >= n
		})
		return lines
	}

	var outA syncBuffer
	a := start(&outA)
	submit(t, a, &batonv1.TaskSpec{Id: "held", Payload: payload(t, map[string]any{})})
	task := next(t, a, 10*time.Second, "")
	if res, err := store.Cancel(ctx, task.Id); err != nil || !res.Requested {
		t.Fatalf("cancel of a claimed task: %+v %v", res, err)
	}
	if _, err := configdoc.NewStore(cli.KV, nil, configdoc.Config{Audit: aw}).Set(ctx, "global", []byte(`{"seed":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Pause(ctx, "tts"); err != nil {
		t.Fatal(err)
	}
	lines := logged(&outA, 3)
	host, _ := os.Hostname()
	for i, want := range []struct{ action, object, detail string }{
		{"task.cancel", "held", "its worker was asked to stop"},
		{"config.set", "global", "new"},
		{"queue.pause", "tts", ""},
	} {
		l := lines[i]
		if l["action"] != want.action || l["object"] != want.object || !strings.Contains(l["detail"].(string), want.detail) ||
			l["uid"] != float64(os.Getuid()) || l["pid"] != float64(os.Getpid()) || l["host"] != host || l["etcd_user"] != "ops" || l["user"] == "" {
			t.Errorf("operator action line %d: %v, want %+v by this process", i, l, want)
		}
	}
	fams := scrape(t, a)
	for action, want := range map[string]float64{"task.cancel": 1, "config.set": 1, "queue.pause": 1, "queue.resume": 0, "task.retry": 0} {
		if got, ok := value(fams, "baton_operator_actions_total", "action", action); !ok || got != want {
			t.Errorf("baton_operator_actions_total{action=%q} = %v (present %v), want %v", action, got, ok, want)
		}
	}

	// No sidecar runs while the operator resumes the queue: the next
	// scheduler logs it, and only it.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Resume(ctx, "tts"); err != nil {
		t.Fatal(err)
	}
	var outB syncBuffer
	b := start(&outB)
	logged(&outB, 1)
	if _, err := store.Retry(ctx, "nothing-to-retry"); err == nil {
		t.Fatal("retry of a missing task succeeded")
	}
	if _, err := store.Pause(ctx, "tts"); err != nil { // a marker: once logged, the log is complete
		t.Fatal(err)
	}
	lines = logged(&outB, 2)
	var got []string
	for _, l := range lines {
		got = append(got, l["action"].(string))
	}
	if strings.Join(got, " ") != "queue.resume queue.pause" {
		t.Errorf("the second scheduler logged %v, want the resume written while none ran, then the pause", got)
	}
	fams = scrape(t, b)
	for action, want := range map[string]float64{"queue.resume": 1, "queue.pause": 1, "task.cancel": 0, "config.set": 0} {
		if got, ok := value(fams, "baton_operator_actions_total", "action", action); !ok || got != want {
			t.Errorf("second scheduler: baton_operator_actions_total{action=%q} = %v, want %v", action, got, want)
		}
	}
}
