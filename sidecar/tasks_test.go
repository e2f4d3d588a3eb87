package sidecar_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func payload(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func submit(t testing.TB, sc *sidecartest.Sidecar, specs ...*batonv1.TaskSpec) *batonv1.SubmitResponse {
	t.Helper()
	resp, err := sc.Client.Tasks.Submit(context.Background(), connect.NewRequest(&batonv1.SubmitRequest{Tasks: specs}))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return resp.Msg
}

func next(t testing.TB, sc *sidecartest.Sidecar, wait time.Duration, session string) *batonv1.Task {
	t.Helper()
	resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(wait), Session: session}))
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return resp.Msg.GetTask()
}

func start(t *testing.T, cfg sidecar.Config) (*sidecartest.Sidecar, string) {
	ns := sidecartest.Namespace(t)
	if cfg.Queues == nil {
		cfg.Queues = []string{"tts"}
	}
	return sidecartest.StartSidecar(t, endpoint, ns, cfg), ns
}

func TestHappyPath(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	resp := submit(t, sc, &batonv1.TaskSpec{Payload: payload(t, map[string]any{"uttid": "u1", "syn_text": "hello"})})
	if resp.Created != 1 || resp.Ids[0] != "u1" {
		t.Fatalf("submit = %+v, want one created with id u1", resp)
	}
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	if task.Id != "u1" || task.Attempt != 1 || task.Queue != "tts" || task.Payload.Fields["syn_text"].GetStringValue() != "hello" {
		t.Fatalf("task = %+v", task)
	}
	if task.FencingToken <= 0 || task.Claim == "" {
		t.Fatalf("claim %q token %d", task.Claim, task.FencingToken)
	}
	_, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: payload(t, map[string]any{"path": "/out/u1.wav"})}))
	if err != nil {
		t.Fatal(err)
	}
	// A second Complete is refused: at most one accepted per task.
	_, err = sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("second complete: %v, want FAILED_PRECONDITION", err)
	}
	if task := next(t, sc, 0, ""); task != nil {
		t.Fatalf("queue should be empty, got %s", task.Id)
	}
}

// Hundreds of concurrent claimers on a small queue: every task is claimed
// exactly once.
func TestConcurrentClaimersNeverShare(t *testing.T) {
	t.Parallel()
	// Three sidecars on the same namespace, so claims race across leases
	// as well as within one sidecar.
	ns := sidecartest.Namespace(t)
	var scs []*sidecartest.Sidecar
	for i := 0; i < 3; i++ {
		scs = append(scs, sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"q"}}))
	}
	const tasks, claimers = 60, 200
	var specs []*batonv1.TaskSpec
	for i := 0; i < tasks; i++ {
		specs = append(specs, &batonv1.TaskSpec{Id: fmt.Sprintf("t%03d", i), Payload: payload(t, map[string]any{"i": i})})
	}
	submit(t, scs[0], specs...)
	var mu sync.Mutex
	got := map[string]int{}
	tokens := map[int64]bool{}
	var wg sync.WaitGroup
	for c := 0; c < claimers; c++ {
		wg.Add(1)
		go func(sc *sidecartest.Sidecar) {
			defer wg.Done()
			for {
				resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{}))
				if err != nil {
					t.Error(err)
					return
				}
				task := resp.Msg.GetTask()
				if task == nil {
					return
				}
				mu.Lock()
				got[task.Id]++
				if tokens[task.FencingToken] {
					t.Errorf("fencing token %d handed out twice", task.FencingToken)
				}
				tokens[task.FencingToken] = true
				mu.Unlock()
			}
		}(scs[c%len(scs)])
	}
	wg.Wait()
	if len(got) != tasks {
		t.Fatalf("claimed %d distinct tasks, want %d", len(got), tasks)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("task %s claimed %d times", id, n)
		}
	}
}

func TestStaleClaimRefused(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "a", Payload: payload(t, map[string]any{})})
	first := next(t, sc, 10*time.Second, "")
	// Give it back and claim again: the first claim is now stale.
	if _, err := sc.Client.Tasks.Release(context.Background(), connect.NewRequest(&batonv1.ReleaseRequest{Claim: first.Claim})); err != nil {
		t.Fatal(err)
	}
	second := next(t, sc, 10*time.Second, "")
	if second == nil || second.Id != "a" || second.FencingToken <= first.FencingToken {
		t.Fatalf("second claim = %+v, want task a with a higher token than %d", second, first.FencingToken)
	}
	if second.Attempt != 1 {
		t.Errorf("release used an attempt: attempt = %d", second.Attempt)
	}
	for name, call := range map[string]func() error{
		"complete": func() error {
			_, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: first.Claim}))
			return err
		},
		"fail": func() error {
			_, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{Claim: first.Claim, Error: "x"}))
			return err
		},
		"heartbeat": func() error {
			_, err := sc.Client.Tasks.Heartbeat(context.Background(), connect.NewRequest(&batonv1.HeartbeatRequest{Claim: first.Claim}))
			return err
		},
		"release": func() error {
			_, err := sc.Client.Tasks.Release(context.Background(), connect.NewRequest(&batonv1.ReleaseRequest{Claim: first.Claim}))
			return err
		},
	} {
		if err := call(); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("%s with stale claim: %v, want FAILED_PRECONDITION", name, err)
		}
	}
	// The live claim still works.
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: second.Claim})); err != nil {
		t.Fatalf("complete with live claim: %v", err)
	}
}

func TestRetriesThenDead(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "flaky", MaxAttempts: 3, Payload: payload(t, map[string]any{})})
	for attempt := int32(1); attempt <= 3; attempt++ {
		task := next(t, sc, 10*time.Second, "")
		if task == nil || task.Attempt != attempt {
			t.Fatalf("attempt %d: got %+v", attempt, task)
		}
		resp, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{
			Claim: task.Claim, Error: fmt.Sprintf("boom %d", attempt), RetryAfter: durationpb.New(50 * time.Millisecond),
		}))
		if err != nil {
			t.Fatal(err)
		}
		if want := attempt < 3; resp.Msg.WillRetry != want {
			t.Fatalf("attempt %d: will_retry = %v, want %v", attempt, resp.Msg.WillRetry, want)
		}
	}
	if task := next(t, sc, 300*time.Millisecond, ""); task != nil {
		t.Fatalf("dead task handed out again: %+v", task)
	}
}

func TestPermanentFailureIsDead(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "bad", Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	resp, err := sc.Client.Tasks.Fail(context.Background(), connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "unsupported language", Permanent: true}))
	if err != nil || resp.Msg.WillRetry {
		t.Fatalf("fail permanent: %v %+v", err, resp)
	}
	if task := next(t, sc, 0, ""); task != nil {
		t.Fatalf("dead task handed out again: %+v", task)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	specs := []*batonv1.TaskSpec{
		{Payload: payload(t, map[string]any{"uttid": "x1"})},
		{Payload: payload(t, map[string]any{"uttid": "x2"})},
	}
	if r := submit(t, sc, specs...); r.Created != 2 || r.Existing != 0 {
		t.Fatalf("first submit: %+v", r)
	}
	specs = append(specs, &batonv1.TaskSpec{Payload: payload(t, map[string]any{"uttid": "x3"})})
	if r := submit(t, sc, specs...); r.Created != 1 || r.Existing != 2 {
		t.Fatalf("second submit: %+v, want 1 created and 2 existing", r)
	}
	seen := map[string]bool{}
	for {
		task := next(t, sc, 0, "")
		if task == nil {
			break
		}
		if seen[task.Id] {
			t.Fatalf("task %s twice", task.Id)
		}
		seen[task.Id] = true
	}
	if len(seen) != 3 {
		t.Fatalf("got %v, want x1 x2 x3", seen)
	}
}

func TestPriorityAndFIFO(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc,
		&batonv1.TaskSpec{Id: "low", Priority: -5, Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "n1", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "n2", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "high", Priority: 10, Payload: payload(t, map[string]any{})},
	)
	var order []string
	for {
		task := next(t, sc, 0, "")
		if task == nil {
			break
		}
		order = append(order, task.Id)
	}
	// One claimer on one sidecar never races, so the order is exact.
	if strings.Join(order, " ") != "high n1 n2 low" {
		t.Fatalf("order %v, want [high n1 n2 low]", order)
	}
}

// A worker that submits and at once polls (wait 0) on the same sidecar
// gets its task: Next waits for the watch to show the sidecar's own write
// before answering "empty". This was a flake before the fix.
func TestNextSeesOwnSubmit(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	for i := range 40 {
		id := fmt.Sprintf("own-%d", i)
		submit(t, sc, &batonv1.TaskSpec{Id: id, Payload: payload(t, map[string]any{})})
		task := next(t, sc, 0, "")
		if task.GetId() != id {
			t.Fatalf("round %d: Next(wait=0) after Submit got %q, want %q", i, task.GetId(), id)
		}
		if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			t.Fatalf("complete: %v", err)
		}
	}
}

// A waiting Next is woken by the watch when a task arrives.
func TestNextWakesOnSubmit(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	got := make(chan *batonv1.Task, 1)
	go func() { got <- next(t, sc, 20*time.Second, "") }()
	// Submit once the Next is waiting; it must not need a poll to see it.
	submit(t, sc, &batonv1.TaskSpec{Id: "late", Payload: payload(t, map[string]any{})})
	select {
	case task := <-got:
		if task == nil || task.Id != "late" {
			t.Fatalf("got %+v", task)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("waiting Next did not get the task")
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"no payload", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Id: "a"}}}))
			return err
		}, "tasks[0].payload"},
		{"bad id", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Id: "a/b", Payload: payload(t, nil)}}}))
			return err
		}, "tasks[0].id"},
		{"bad queue", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Queue: "a b", Payload: payload(t, nil)}}}))
			return err
		}, "tasks[0].queue"},
		{"big payload", func() error {
			big := make([]byte, 70<<10)
			for i := range big {
				big[i] = 'x'
			}
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Payload: payload(t, map[string]any{"t": string(big)})}}}))
			return err
		}, "tasks[0].payload"},
		{"bad priority", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Priority: 5000, Payload: payload(t, nil)}}}))
			return err
		}, "tasks[0].priority"},
		{"duplicate id", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Id: "d", Payload: payload(t, nil)}, {Id: "d", Payload: payload(t, nil)}}}))
			return err
		}, "tasks[1].id"},
		{"bad queue in next", func() error {
			_, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Queues: []string{"no/slash"}}))
			return err
		}, "queues[0]"},
		{"20,000 queues in one next (hardening issue, item 4)", func() error {
			qs := make([]string, 20_000)
			for i := range qs {
				qs[i] = fmt.Sprintf("q%d", i)
			}
			_, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Queues: qs, Wait: durationpb.New(time.Second)}))
			return err
		}, "queues"},
		{"a process name of 3 MB (item 11)", func() error {
			stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: strings.Repeat("w", 3<<20)}))
			if err != nil {
				return err
			}
			defer stream.Close()
			stream.Receive()
			return stream.Err()
		}, "process"},
		{"missing claim", func() error {
			_, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{}))
			return err
		}, "claim"},
		{"malformed claim", func() error {
			_, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: "nonsense"}))
			return err
		}, "claim"},
		{"unknown session", func() error {
			_, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Session: "s-nope"}))
			return err
		}, ""},
	}
	for _, c := range cases {
		err := c.call()
		var ce *connect.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want a Connect error", c.name, err)
			continue
		}
		if c.field == "" {
			if ce.Code() != connect.CodeFailedPrecondition {
				t.Errorf("%s: code %v", c.name, ce.Code())
			}
			continue
		}
		if ce.Code() != connect.CodeInvalidArgument || !startsWith(ce.Message(), c.field+":") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %s", c.name, err, c.field)
		}
	}
	// Nothing was written by the refused submits. (Next with wait 0
	// answers UNAVAILABLE until the sidecar holds its lease, which a fast
	// run of the calls above can beat: wait for the health service.)
	g := healthClient(t, sc.Socket)
	waitFor(t, 20*time.Second, "sidecar serving", func() bool { return g.check(t) == "SERVING" })
	if task := next(t, sc, 0, ""); task != nil {
		t.Fatalf("refused submit wrote task %s", task.Id)
	}
	// A valid queue that the sidecar does not serve is refused
	// (TestScopedAccess); one it serves is just empty.
	if _, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Queues: []string{"nobody-uses-this"}})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("a queue not served: %v, want PERMISSION_DENIED", err)
	}
	resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Queues: []string{"tts"}}))
	if err != nil || resp.Msg.Task != nil {
		t.Fatalf("an empty queue: %v %+v", err, resp)
	}
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

var _ = json.Marshal
