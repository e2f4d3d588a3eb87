package sidecar_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/sidecartest"
)

// Regression (hardening issue, item 2): a claim was "<id>@<revision>",
// answerable through any sidecar's socket; a loop over small revisions
// finished another sidecar's task. A claim handle now carries a secret
// that only the holding sidecar knows, and only that sidecar answers it.
func TestClaimAnswerableOnlyByItsHolder(t *testing.T) {
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
