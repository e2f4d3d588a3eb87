package sidecar_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Regression (hardening issue, scoped access): any socket peer could
// claim from and submit to any queue of the namespace through any
// sidecar. Next now takes only from the sidecar's queues (--queue) and
// Submit writes only to its submit queues (--submit-queue, default its
// queues); other queues are PERMISSION_DENIED naming the field and the
// queue, logged with the caller's uid and pid, counted, and change
// nothing.
func TestScopedAccess(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	ns := sidecartest.Namespace(t)
	gpu := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{
		Queues: []string{"tts", "asr"}, AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	other := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"ocr"}, SubmitQueues: []string{"ocr", "tts"}})
	ctx := context.Background()
	spec := func(id, queue string) *batonv1.TaskSpec {
		return &batonv1.TaskSpec{Id: id, Queue: queue, Payload: payload(t, map[string]any{})}
	}
	nextOn := func(sc *sidecartest.Sidecar, queues ...string) (*batonv1.Task, error) {
		resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Queues: queues, Wait: durationpb.New(0)}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetTask(), nil
	}
	denied := func(what string, err error, want string) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("%s: %v, want PERMISSION_DENIED", what, err)
		}
		if msg := errMessage(err); !strings.Contains(msg, want) {
			t.Fatalf("%s: %q, want it to say %q", what, msg, want)
		}
	}

	// A victim task on ocr, a queue the gpu sidecar does not serve.
	submit(t, other, spec("victim", "ocr"))
	_, err := nextOn(gpu, "tts", "asr", "ocr")
	denied("Next on a queue not served", err, `queues[2]: queue "ocr" is not served by this sidecar (its queues: tts, asr)`)
	// Submit to a queue it may not submit to: nothing is written, not
	// even the tasks before the refused one.
	_, err = gpu.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{spec("ok", "tts"), spec("flood", "ocr")}}))
	denied("Submit to a queue not allowed", err, `tasks[1].queue: queue "ocr" is not one this sidecar may submit to (its submit queues: tts, asr)`)
	// A name that is no queue at all is bad input, not a scope question.
	if _, err := nextOn(gpu, "no/such"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Next on an invalid queue name: %v, want INVALID_ARGUMENT", err)
	}

	// Nothing changed: the victim is the ocr sidecar's to take, and
	// neither "ok" nor "flood" was written.
	task, err := nextOn(other)
	if err != nil || task.GetId() != "victim" {
		t.Fatalf("the ocr sidecar's Next: %v %v, want the victim task", task, err)
	}
	complete(t, other, task)
	if task, err := nextOn(gpu); err != nil || task != nil {
		t.Fatalf("the gpu sidecar's default Next: %v %v, want no task (nothing was submitted)", task, err)
	}

	// Allowed: its own queues (named, or by default: Next without queues
	// takes from all of them; Submit without a queue goes to the first),
	// and --submit-queue beyond them.
	submit(t, gpu, spec("a1", "asr"), spec("t1", ""))
	submit(t, other, spec("t2", "tts"))
	got := map[string]string{}
	for range 3 {
		task, err := nextOn(gpu)
		if err != nil || task == nil {
			t.Fatalf("the gpu sidecar's default Next: %v %v; got so far %v", task, err, got)
		}
		got[task.Id] = task.Queue
		complete(t, gpu, task)
	}
	if want := map[string]string{"a1": "asr", "t1": "tts", "t2": "tts"}; !maps.Equal(got, want) {
		t.Fatalf("tasks taken: %v, want %v", got, want)
	}
	if task, err := nextOn(gpu, "asr"); err != nil || task != nil {
		t.Fatalf("Next on a served queue: %v %v, want no task and no error", task, err)
	}

	// Counted by rpc, never by queue; logged with the caller and the
	// queue.
	fams := scrape(t, gpu)
	for _, rpc := range []string{"Next", "Submit"} {
		if v, _ := value(fams, "baton_socket_queue_denied_total", "rpc", rpc); v != 1 {
			t.Errorf("baton_socket_queue_denied_total{rpc=%q} = %v, want 1", rpc, v)
		}
	}
	for _, m := range fams["baton_socket_queue_denied_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != "rpc" {
				t.Errorf("baton_socket_queue_denied_total has label %s; only rpc is bounded", l.GetName())
			}
		}
	}
	uid := "peer_uid=" + strconv.Itoa(os.Getuid())
	pid := "peer_pid=" + strconv.Itoa(os.Getpid())
	var refusals []string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "queue out of this sidecar's scope") {
			refusals = append(refusals, line)
		}
	}
	if len(refusals) != 2 || !strings.Contains(refusals[0], "op=Next") || !strings.Contains(refusals[0], `\"ocr\"`) ||
		!strings.Contains(refusals[1], "op=Submit") || !strings.Contains(refusals[1], uid) || !strings.Contains(refusals[1], pid) {
		t.Fatalf("refusal log lines %q, want one for Next and one for Submit naming the queue, %s and %s", refusals, uid, pid)
	}
}

// A sidecar started with --submit-queue '*' lets its workers submit to
// any queue; Next stays on its own queues.
func TestSubmitAnyQueue(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{Queues: []string{"tts"}, SubmitQueues: []string{server.AnyQueue}})
	submit(t, sc, &batonv1.TaskSpec{Id: "x", Queue: "anywhere", Payload: payload(t, map[string]any{})})
	_, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Queues: []string{"anywhere"}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Next on a queue not served: %v, want PERMISSION_DENIED", err)
	}
}

// The configuration names the bad field.
func TestScopeConfigIsValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  sidecar.Config
		want string
	}{
		{sidecar.Config{Socket: "s", Queues: []string{"a"}, SubmitQueues: []string{"a", "b/c"}}, "submit-queue[1]: "},
		{sidecar.Config{Socket: "s", Queues: strings.Fields(strings.Repeat("q ", 17))}, "queue: 17 queues, over the limit of 16"},
	} {
		if _, err := sidecar.New(tc.cfg); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error starting %q", tc.cfg, err, tc.want)
		}
	}
}

// errMessage is the message of a Connect error, without its code.
func errMessage(err error) string {
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
