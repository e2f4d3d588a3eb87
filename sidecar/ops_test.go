package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// opsCLI runs the CLI against the test etcd in namespace ns and returns its
// stdout, stderr and exit code.
func opsCLI(t testing.TB, ns string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = batoncli.Main(context.Background(), append([]string{"baton", "--endpoints", endpoint, "--namespace", ns}, args...), nil, &out, &errb)
	return out.String(), errb.String(), code
}

// opsCLIJSON runs a command with -o json and decodes its stdout into v.
func opsCLIJSON(t testing.TB, ns string, v any, args ...string) {
	t.Helper()
	// Flags go before positional arguments (urfave/cli): after the
	// command words.
	n := 0
	for n < len(args) && n < 2 && !strings.HasPrefix(args[n], "-") && (n == 0 || args[0] != "wait") {
		n++
	}
	full := append(append(append([]string{}, args[:n]...), "-o", "json"), args[n:]...)
	out, stderr, code := opsCLI(t, ns, full...)
	if code != 0 {
		t.Fatalf("baton %v: exit %d: %s", args, code, stderr)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("baton %v: stdout is not JSON: %v\n%s", args, err, out)
	}
}

type opsTask struct {
	ID     string `json:"id"`
	Status struct {
		State   string `json:"state"`
		Attempt int32  `json:"attempt"`
		Holder  string `json:"holder"`
	} `json:"status"`
	Cancelling bool            `json:"cancelling"`
	Payload    json.RawMessage `json:"payload"`
	LastError  *struct {
		Error string `json:"error"`
	} `json:"last_error"`
}

func opsTaskGet(t testing.TB, ns, id string) opsTask {
	t.Helper()
	var tj opsTask
	opsCLIJSON(t, ns, &tj, "tasks", "get", id)
	return tj
}

func opsAttach(t testing.TB, sc *sidecartest.Sidecar) (*connect.ServerStreamForClient[batonv1.AttachResponse], string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "w"}))
	if err != nil || !stream.Receive() {
		t.Fatalf("attach: %v %v", err, stream.Err())
	}
	return stream, stream.Msg().Session
}

func TestWorkersListAndRegistryEntryVanishes(t *testing.T) {
	t.Parallel()
	ns := sidecartest.Namespace(t)
	sc := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{
		Queues: []string{"tts"}, WorkerID: "gpu-7", Labels: map[string]string{"gpu": "a100"}, Version: "v-test",
	})
	var ws []registry.Entry
	waitFor(t, 20*time.Second, "the sidecar is registered", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1
	})
	w := ws[0]
	if w.WorkerID != "gpu-7" || w.Labels["gpu"] != "a100" || w.Version != "v-test" || len(w.Queues) != 1 || w.Queues[0] != "tts" || w.PID == 0 || w.Host == "" || w.InHand != 0 {
		t.Fatalf("entry = %+v", w)
	}

	submit(t, sc, &batonv1.TaskSpec{Id: "a", Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	waitFor(t, 20*time.Second, "in hand is 1", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1 && ws[0].InHand == 1
	})
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "in hand is 0 again", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1 && ws[0].InHand == 0
	})
	out, _, code := opsCLI(t, ns, "workers", "list")
	if code != 0 || !strings.Contains(out, "gpu-7") || !strings.Contains(out, "gpu=a100") {
		t.Fatalf("table: exit %d\n%s", code, out)
	}

	if err := sc.Stop(); err != nil {
		t.Fatal(err)
	}
	opsCLIJSON(t, ns, &ws, "workers", "list")
	if len(ws) != 0 {
		t.Fatalf("after stop: %+v", ws)
	}
}

func TestCancelPendingAndClaimed(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	submit(t, sc,
		&batonv1.TaskSpec{Id: "first", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "second", Payload: payload(t, map[string]any{})},
	)
	stream, session := opsAttach(t, sc)
	task := next(t, sc, 10*time.Second, session)
	if task == nil || task.Id != "first" {
		t.Fatalf("next = %v", task)
	}

	// PENDING: cancelled at once, never handed out.
	out, stderr, code := opsCLI(t, ns, "tasks", "cancel", "second")
	if code != 0 || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel second: exit %d %q %q", code, out, stderr)
	}
	if st := opsTaskGet(t, ns, "second"); st.Status.State != "CANCELLED" {
		t.Fatalf("second is %s", st.Status.State)
	}

	// CLAIMED: the worker learns of it through Attach and Heartbeat.
	hb, err := sc.Client.Tasks.Heartbeat(context.Background(), connect.NewRequest(&batonv1.HeartbeatRequest{Claim: task.Claim}))
	if err != nil || hb.Msg.CancelRequested {
		t.Fatalf("heartbeat before cancel: %v %v", hb, err)
	}
	out, _, code = opsCLI(t, ns, "tasks", "cancel", "first")
	if code != 0 || !strings.Contains(out, "asked to stop") {
		t.Fatalf("cancel first: exit %d %q", code, out)
	}
	if !stream.Receive() {
		t.Fatalf("attach stream ended: %v", stream.Err())
	}
	if c := stream.Msg().GetCancel(); c.GetTaskId() != "first" || c.GetClaim() != task.Claim {
		t.Fatalf("pushed %+v, want a cancel of first", stream.Msg())
	}
	hb, err = sc.Client.Tasks.Heartbeat(context.Background(), connect.NewRequest(&batonv1.HeartbeatRequest{Claim: task.Claim}))
	if err != nil || !hb.Msg.CancelRequested {
		t.Fatalf("heartbeat after cancel: %v %v", hb, err)
	}
	if st := opsTaskGet(t, ns, "first"); st.Status.State != "CLAIMED" || !st.Cancelling || st.Status.Holder == "" {
		t.Fatalf("first = %+v", st)
	}
	// The worker gives up: the task is CANCELLED, not retried.
	fr, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "cancelled by operator"}))
	if err != nil || fr.Msg.WillRetry {
		t.Fatalf("fail: %v %v", fr, err)
	}
	if st := opsTaskGet(t, ns, "first"); st.Status.State != "CANCELLED" {
		t.Fatalf("first is %s after Fail", st.Status.State)
	}
	if task := next(t, sc, 0, ""); task != nil {
		t.Fatalf("cancelled task handed out: %v", task)
	}
	if _, stderr, code := opsCLI(t, ns, "tasks", "get", "first", "extra"); code != 2 || !strings.Contains(stderr, "tasks get: give one task ID") {
		t.Fatalf("get with two args: exit %d %q", code, stderr)
	}
	// Cancelling again is fine; a missing task is a clear error.
	if _, _, code := opsCLI(t, ns, "tasks", "cancel", "first"); code != 0 {
		t.Fatalf("second cancel: exit %d", code)
	}
	if _, stderr, code := opsCLI(t, ns, "tasks", "cancel", "nope"); code != 1 || !strings.Contains(stderr, "task nope not found") {
		t.Fatalf("cancel nope: exit %d %q", code, stderr)
	}
}

func TestRetryDeadTask(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "doomed", MaxAttempts: 2, Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	if _, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "bad input", Permanent: true})); err != nil {
		t.Fatal(err)
	}
	if st := opsTaskGet(t, ns, "doomed"); st.Status.State != "DEAD" || st.LastError == nil || st.LastError.Error != "bad input" {
		t.Fatalf("doomed = %+v", st)
	}
	out, stderr, code := opsCLI(t, ns, "tasks", "retry", "doomed")
	if code != 0 || !strings.Contains(out, "PENDING again") {
		t.Fatalf("retry: exit %d %q %q", code, out, stderr)
	}
	// Idempotent: a second retry changes nothing and succeeds.
	var r struct{ Changed bool }
	opsCLIJSON(t, ns, &r, "tasks", "retry", "doomed")
	if r.Changed {
		t.Fatal("second retry changed something")
	}
	task = next(t, sc, 10*time.Second, "")
	if task == nil || task.Id != "doomed" || task.Attempt != 1 {
		t.Fatalf("after retry got %v; want doomed at attempt 1", task)
	}
	// A claimed task cannot be retried.
	if _, stderr, code := opsCLI(t, ns, "tasks", "retry", "doomed"); code != 1 || !strings.Contains(stderr, "is CLAIMED; only DEAD or CANCELLED") {
		t.Fatalf("retry claimed: exit %d %q", code, stderr)
	}
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := opsCLI(t, ns, "tasks", "retry", "doomed"); code != 1 || !strings.Contains(stderr, "is DONE") {
		t.Fatalf("retry done: exit %d %q", code, stderr)
	}
	// The list shows it.
	var list []opsTask
	opsCLIJSON(t, ns, &list, "tasks", "list", "--state", "done")
	if len(list) != 1 || list[0].ID != "doomed" {
		t.Fatalf("list = %+v", list)
	}
	out, _, code = opsCLI(t, ns, "tasks", "list", "--queue", "tts")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "doomed") || !strings.Contains(lines[1], "DONE") {
		t.Fatalf("table: exit %d\n%s", code, out)
	}
}

func TestPauseStopsHandOutAndResumeRestarts(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	if _, _, code := opsCLI(t, ns, "queues", "pause", "tts"); code != 0 {
		t.Fatalf("pause: exit %d", code)
	}
	// The scheduler's watch sees the pause before the submit that follows.
	submit(t, sc, &batonv1.TaskSpec{Id: "held-back", Payload: payload(t, map[string]any{})})
	if task := next(t, sc, 300*time.Millisecond, ""); task != nil {
		t.Fatalf("paused queue handed out %s", task.Id)
	}
	var qs []struct {
		Queue   string
		Pending int
		Paused  bool
	}
	opsCLIJSON(t, ns, &qs, "queues", "list")
	if len(qs) != 1 || qs[0].Queue != "tts" || qs[0].Pending != 1 || !qs[0].Paused {
		t.Fatalf("queues = %+v", qs)
	}
	// A waiting Next is woken by the resume.
	got := make(chan *batonv1.Task, 1)
	go func() {
		resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(20 * time.Second)}))
		if err != nil {
			got <- nil
			return
		}
		got <- resp.Msg.Task
	}()
	if _, _, code := opsCLI(t, ns, "queues", "resume", "tts"); code != 0 {
		t.Fatalf("resume: exit %d", code)
	}
	if task := <-got; task == nil || task.Id != "held-back" {
		t.Fatalf("after resume got %v", task)
	}
	out, _, _ := opsCLI(t, ns, "queues", "list")
	if !strings.Contains(out, "CLAIMED") || !strings.Contains(out, "tts") ||
		!strings.Contains(out, "etcd database: ") || !strings.Contains(out, "of its 2147.5 MB quota") {
		t.Fatalf("table (with etcd's database size against its quota):\n%s", out)
	}
}

func TestWaitBatchExitCodes(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	submit(t, sc,
		&batonv1.TaskSpec{Id: "b1", Batch: "good", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "b2", Batch: "good", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "b3", Batch: "bad", Payload: payload(t, map[string]any{})},
	)
	type result struct {
		out, errs string
		code      int
	}
	wait := func(args ...string) chan result {
		ch := make(chan result, 1)
		go func() {
			o, e, c := opsCLI(t, ns, args...)
			ch <- result{o, e, c}
		}()
		return ch
	}
	good := wait("wait", "--batch", "good")
	for range 2 {
		task := next(t, sc, 10*time.Second, "")
		if task.Batch != "good" {
			t.Fatalf("got %s of batch %q", task.Id, task.Batch)
		}
		if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			t.Fatal(err)
		}
	}
	// Not a terminal: plain progress lines on stderr, the summary on stdout.
	if r := <-good; r.code != 0 || !strings.Contains(r.out, "2 tasks, 2 DONE") || !strings.Contains(r.errs, "batch good: done 2 dead 0 of 2") {
		t.Fatalf("wait good: exit %d %q %q", r.code, r.out, r.errs)
	}
	// Not finished within --timeout: exit 3.
	if _, _, code := opsCLI(t, ns, "wait", "--batch", "bad", "--timeout", "200ms"); code != 3 {
		t.Fatalf("wait with timeout: exit %d, want 3", code)
	}
	bad := wait("wait", "--batch", "bad", "-o", "json")
	task := next(t, sc, 10*time.Second, "")
	if _, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "x", Permanent: true})); err != nil {
		t.Fatal(err)
	}
	r := <-bad
	var sum struct {
		Total   int
		States  map[string]int
		AllDone bool `json:"all_done"`
	}
	if err := json.Unmarshal([]byte(r.out), &sum); err != nil || r.code != 1 || sum.Total != 1 || sum.States["DEAD"] != 1 || sum.AllDone {
		t.Fatalf("wait bad: exit %d %q %q (%v)", r.code, r.out, r.errs, err)
	}
	if _, stderr, code := opsCLI(t, ns, "wait", "--batch", "none"); code != 2 || !strings.Contains(stderr, "no tasks") {
		t.Fatalf("wait none: exit %d %q", code, stderr)
	}
}

// A sidecar killed with SIGKILL cannot deregister: its entry goes with its
// lease. Submitted through the CLI, claimed by the killed sidecar.
func TestRegistryEntryVanishesOnLeaseExpiry(t *testing.T) {
	t.Parallel()
	ns := sidecartest.Namespace(t)
	file := t.TempDir() + "/one.jsonl"
	if err := os.WriteFile(file, []byte(`{"uttid":"u1","syn_text":"hi"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := opsCLI(t, ns, "submit", "--queue", "tts", file); code != 0 || !strings.Contains(out, "1 created") {
		t.Fatalf("submit: exit %d %q %q", code, out, stderr)
	}
	const ttl = 2 * time.Second
	victim, id, _ := startRole(t, "BATON_TEST_ROLE=sidecar", "BATON_TEST_ENDPOINT="+endpoint, "BATON_TEST_NS="+ns,
		"BATON_TEST_SOCKET="+sidecartest.SocketPath(t), "BATON_TEST_TTL="+ttl.String())
	if id != "u1" {
		t.Fatalf("role claimed %q", id)
	}
	var ws []registry.Entry
	waitFor(t, 20*time.Second, "the victim is registered holding one task", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1 && ws[0].InHand == 1 && ws[0].PID == victim.PID()
	})
	victim.Kill()
	waitFor(t, 20*time.Second, "the entry vanishes with the lease", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 0
	})
}

// When the sidecar's lease is lost (here revoked from outside, as etcd
// does after a partition longer than the TTL) the entry vanishes with it
// and the sidecar registers again under its new lease.
func TestRegistryEntryReturnsUnderNewLease(t *testing.T) {
	t.Parallel()
	_, ns := start(t, sidecar.Config{WorkerID: "phoenix"})
	var ws []registry.Entry
	waitFor(t, 20*time.Second, "the sidecar is registered", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1
	})
	old := ws[0].Lease
	cli := sidecartest.Client(t, endpoint, ns)
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the sidecar registers again under a new lease", func() bool {
		opsCLIJSON(t, ns, &ws, "workers", "list")
		return len(ws) == 1 && ws[0].WorkerID == "phoenix" && ws[0].Lease != old
	})
}
