package sidecar_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
)

// Regression (hardening issue, item 2): a claim was "<id>@<revision>",
// answerable through any sidecar's socket; a loop over small revisions
// finished another sidecar's task. A claim handle now carries a secret
// that only the holding sidecar knows, and only that sidecar answers it.
func TestClaimAnswerableOnlyByItsHolder(t *testing.T) {
	t.Parallel()
	fleet, _ := startFleet(t, 2, nil)
	holder, other := fleet[0], fleet[1]
	submit(t, holder, &batonv1.TaskSpec{Id: "victim", Payload: payload(t, map[string]any{})})
	task := next(t, holder, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	base, secret, ok := strings.Cut(task.Claim, ".")
	if !ok || len(secret) != 32 || base != task.Id+"@"+itoa(task.FencingToken) {
		t.Fatalf("claim %q: want <id>@<fencing token>.<32 hex digits>", task.Claim)
	}
	answer := func(sc *sidecartest.Sidecar, claim string) error {
		_, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: claim}))
		return err
	}
	// Through another sidecar, with the right handle: refused.
	if err := answer(other, task.Claim); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("complete through another sidecar: %v, want FAILED_PRECONDITION", err)
	}
	// Through the holder, with the id and token but a guessed secret.
	if err := answer(holder, base+"."+strings.Repeat("0", 32)); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("complete with a guessed secret: %v, want FAILED_PRECONDITION", err)
	}
	// Non-canonical tokens and the old form are not claims at all.
	for _, c := range []string{task.Id + "@+" + itoa(task.FencingToken) + "." + secret, task.Id + "@0" + itoa(task.FencingToken) + "." + secret, base, base + "." + strings.ToUpper(secret)} {
		if err := answer(holder, c); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("complete %q: %v, want INVALID_ARGUMENT", c, err)
		}
	}
	if got := holder.Dispatcher().Stats().Refused + other.Dispatcher().Stats().Refused; got != 2 {
		t.Fatalf("refused answers counted: %d, want 2", got)
	}
	// The task is untouched: its worker completes it.
	complete(t, holder, task)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// logLines returns the JSON log lines of out whose msg is msg.
func logLines(t *testing.T, out *syncBuffer, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if line == "" || json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["msg"] == msg {
			lines = append(lines, rec)
		}
	}
	return lines
}

// Hardening issue, "Audit": a refused answer is logged with who sent it —
// the caller's uid and pid, and the process name and session id of the
// worker sessions that process opened on the sidecar — and counted, also
// when the claim is stale: held by the sidecar but gone in etcd (the lease
// lapsed, the claim expired). Before, the log had no worker or session,
// and a stale answer was not counted.
func TestRefusedAnswersNameTheCaller(t *testing.T) {
	t.Parallel()
	outs := make([]*syncBuffer, 2)
	fleet, ns := startFleet(t, 2, func(i int) sidecar.Config {
		outs[i] = &syncBuffer{}
		return sidecar.Config{Logger: slog.New(slog.NewJSONHandler(outs[i], nil))}
	})
	holder, other := fleet[0], fleet[1]
	submit(t, holder, &batonv1.TaskSpec{Id: "victim", Payload: payload(t, map[string]any{})})
	task := next(t, holder, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	// A worker of the other sidecar answers the holder's claim there.
	session, _ := lockSession(t, other, "intruder")
	if _, err := other.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("foreign answer: %v, want FAILED_PRECONDITION", err)
	}
	lines := logLines(t, outs[1], "answer refused: the claim is not live on this sidecar")
	if len(lines) != 1 {
		t.Fatalf("refusal lines on the other sidecar: %v", lines)
	}
	l := lines[0]
	if l["op"] != "Complete" || l["task"] != "victim" || l["peer_uid"] != float64(os.Getuid()) || l["peer_pid"] != float64(os.Getpid()) ||
		l["process"] != "intruder" || l["session"] != session {
		t.Errorf("refusal logged as %v; want op, task, the caller's uid and pid, process intruder and session %s", l, session)
	}

	// The holder's claim is lost in etcd (as when its lease lapses); the
	// worker's late answer is refused, logged and counted.
	cli := sidecartest.Client(t, endpoint, ns)
	if _, err := cli.Delete(context.Background(), "q/claim/victim"); err != nil {
		t.Fatal(err)
	}
	before := holder.Dispatcher().Stats().Refused
	if _, err := holder.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("stale answer: %v, want FAILED_PRECONDITION", err)
	}
	if got := holder.Dispatcher().Stats().Refused - before; got != 1 {
		t.Errorf("stale answers counted: %d, want 1", got)
	}
	if lines := logLines(t, outs[0], "answer refused: the claim is not live on this sidecar"); len(lines) != 1 || lines[0]["process"] != "-" || lines[0]["session"] != "-" {
		t.Errorf("stale refusal lines on the holder: %v; want one, with no session of the caller", lines)
	}
}
