package sidecar_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
)

// Regression (big batches issue, item 4): a result is a reference to the
// output, not the output. A result over the limit is refused with
// INVALID_ARGUMENT saying where output belongs; the claim stays live, and
// the same task completes with a small result.
func TestBigResultRefused(t *testing.T) {
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()
	submit(t, sc, &batonv1.TaskSpec{Id: "big-result", Payload: payload(t, map[string]any{"syn_text": "hello"})})
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	big := payload(t, map[string]any{"audio_base64": strings.Repeat("A", 5000)})
	_, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: big}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "result:") ||
		!strings.Contains(err.Error(), "4096") || !strings.Contains(err.Error(), "path or URI") {
		t.Fatalf("complete with a 5 KB result: %v, want INVALID_ARGUMENT naming result, the limit and where output belongs", err)
	}
	small := payload(t, map[string]any{"path": "s3://corpus/out/big-result.wav"})
	if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: small})); err != nil {
		t.Fatalf("complete with a small result after the refusal: %v", err)
	}
}
