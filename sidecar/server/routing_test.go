package server_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func payload(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSubmitRoutingFields: affinity and require reach the stored task, and
// Next hands the affinity key to the worker.
func TestSubmitRoutingFields(t *testing.T) {
	ns := sidecartest.Namespace(t)
	// Labelled like an IndexTTS2 container, so that the task is this
	// sidecar's to receive once dispatch matches labels.
	sc := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}, Labels: map[string]string{"model": "indextts2", "gpu": "a100"}})
	ctx := context.Background()
	want := map[string]string{"model": "indextts2"}
	_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{
		{Id: "u1", Payload: payload(t, map[string]any{"syn_text": "hi"}), Affinity: "spk/alice.wav", Require: want},
		{Id: "u2", Payload: payload(t, map[string]any{"syn_text": "ho"})},
	}}))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	store, err := workqueue.NewStore(sidecartest.Client(t, endpoint, ns).KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Affinity != "spk/alice.wav" || !maps.Equal(got.Status.Require, want) {
		t.Fatalf("stored u1: affinity %q, require %v; want spk/alice.wav, %v", got.Status.Affinity, got.Status.Require, want)
	}
	plain, err := store.Get(ctx, "u2")
	if err != nil {
		t.Fatal(err)
	}
	if plain.Status.Affinity != "" || plain.Status.Require != nil {
		t.Fatalf("stored u2: affinity %q, require %v; want none", plain.Status.Affinity, plain.Status.Require)
	}

	seen := map[string]string{}
	for len(seen) < 2 {
		resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(10 * time.Second)}))
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		task := resp.Msg.GetTask()
		if task == nil {
			t.Fatalf("no task within 10s; got %v so far", seen)
		}
		seen[task.GetId()] = task.GetAffinity()
		if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.GetClaim()})); err != nil {
			t.Fatalf("complete: %v", err)
		}
	}
	if seen["u1"] != "spk/alice.wav" || seen["u2"] != "" {
		t.Fatalf("Task.affinity by id = %v, want u1: spk/alice.wav, u2: empty", seen)
	}
}

// TestSubmitRoutingBadInput: bad routing fields are INVALID_ARGUMENT naming
// the task and the field, and nothing of the request is written.
func TestSubmitRoutingBadInput(t *testing.T) {
	ns := sidecartest.Namespace(t)
	sc := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}})
	ctx := context.Background()
	tooMany := map[string]string{}
	for i := range workqueue.MaxRequire + 1 {
		tooMany[string(rune('a'+i))] = "x"
	}
	good := func(id string) *batonv1.TaskSpec {
		return &batonv1.TaskSpec{Id: id, Payload: payload(t, map[string]any{"x": 1})}
	}
	cases := []struct {
		name  string
		tasks []*batonv1.TaskSpec
		field string
	}{
		{"label key with a space", []*batonv1.TaskSpec{{Id: "a", Payload: payload(t, nil), Require: map[string]string{"gpu model": "a100"}}}, "tasks[0].require"},
		{"empty label key", []*batonv1.TaskSpec{{Id: "a", Payload: payload(t, nil), Require: map[string]string{"": "x"}}}, "tasks[0].require"},
		{"too many labels", []*batonv1.TaskSpec{{Id: "a", Payload: payload(t, nil), Require: tooMany}}, "tasks[0].require"},
		{"label value too long", []*batonv1.TaskSpec{good("a"), {Id: "b", Payload: payload(t, nil), Require: map[string]string{"model": strings.Repeat("v", workqueue.MaxLabelValueLen+1)}}}, "tasks[1].require"},
		{"affinity too long", []*batonv1.TaskSpec{good("a"), good("b"), {Id: "c", Payload: payload(t, nil), Affinity: strings.Repeat("k", workqueue.MaxAffinityLen+1)}}, "tasks[2].affinity"},
	}
	for _, c := range cases {
		_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: c.tasks}))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(ce.Message(), c.field+": ") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %s", c.name, err, c.field)
		}
	}
	store, err := workqueue.NewStore(sidecartest.Client(t, endpoint, ns).KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := store.Get(ctx, id); !errors.Is(err, workqueue.ErrNotFound) {
			t.Errorf("task %s after refused submits: %v, want not found", id, err)
		}
	}
}
