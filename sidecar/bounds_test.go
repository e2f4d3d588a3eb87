package sidecar_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Regression (hardening issue, item 1): a far-future time overflowed the
// Unix nanoseconds of an index key, and the malformed key then stopped
// the queue for every sidecar. Every time an API field accepts is bounded,
// and the error names the field and the bound.
func TestTimesAreBounded(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name, field string
		call        func() error
	}{
		{"not_before in 2300", "tasks[0].not_before", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{
				{Id: "far", Payload: payload(t, map[string]any{}), NotBefore: timestamppb.New(far)}}}))
			return err
		}},
		{"timeout of 2,000,000h", "tasks[0].timeout", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{
				{Id: "long", Payload: payload(t, map[string]any{}), Timeout: durationpb.New(2_000_000 * time.Hour)}}}))
			return err
		}},
		{"wait of 11m", "wait", func() error {
			_, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(11 * time.Minute)}))
			return err
		}},
	}
	for _, c := range cases {
		err := c.call()
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), c.field+":") || !strings.Contains(err.Error(), "h") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %s and its bound", c.name, err, c.field)
		}
	}

	// retry_after far in the future, on a live claim: refused, the claim
	// stays live and the task can still be completed.
	submit(t, sc, &batonv1.TaskSpec{Id: "retry-far", Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	_, err := sc.Client.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: "x", RetryAfter: durationpb.New(9_000_000_000 * time.Second)}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "retry_after:") {
		t.Fatalf("fail with retry_after 9e9s: %v, want INVALID_ARGUMENT naming retry_after", err)
	}
	complete(t, sc, task)
}

// A malformed key in a ready index (written by an older version, or by
// hand) is skipped: the queue keeps handing out tasks, on the scheduler's
// path and on the poll path. `baton queues list` shows them.
func TestMalformedReadyKeyDoesNotStopTheQueue(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	bad := `{"state":"PENDING","queue":"tts","attempt":0,"max_attempts":3,"timeout_ms":300000,"order":0,"updated_ms":0}`
	for _, k := range []string{"q/ready/tts/0000/99999999999999999999/overflow", "q/ready/tts/0000/x/bad"} {
		if _, err := cli.Put(context.Background(), k, bad); err != nil {
			t.Fatal(err)
		}
	}
	submit(t, sc, &batonv1.TaskSpec{Id: "good-1", Payload: payload(t, map[string]any{})})
	if task := next(t, sc, 10*time.Second, ""); task == nil || task.Id != "good-1" {
		t.Fatalf("scheduler path: %v", task)
	}
	if got := sc.Dispatcher().Stats().Malformed; got < 2 {
		t.Errorf("malformed entries counted: %d, want 2", got)
	}
	submit(t, sc, &batonv1.TaskSpec{Id: "good-2", Payload: payload(t, map[string]any{})})
	if task := next(t, sc, 0, ""); task == nil || task.Id != "good-2" {
		t.Fatalf("poll path: %v", task)
	}
	var qs []struct {
		Queue     string
		Malformed int
	}
	opsCLIJSON(t, ns, &qs, "queues", "list")
	if len(qs) != 1 || qs[0].Queue != "tts" || qs[0].Malformed != 2 {
		t.Fatalf("queues list = %+v, want tts with 2 malformed", qs)
	}
}
