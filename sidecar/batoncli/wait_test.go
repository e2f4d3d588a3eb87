package batoncli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Regression (worker experience issue, item 7): `baton wait b1`, the batch
// as an argument, printed nothing and exited 1.
func TestWaitTakesTheBatchAsAnArgument(t *testing.T) {
	ns := sidecartest.Namespace(t)
	ctx := context.Background()
	s := store(t, ns)
	if _, err := s.Submit(ctx, []workqueue.Spec{{ID: "w1", Queue: "tts", Batch: "b1", Payload: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"wait", "b1"}, {"wait", "--batch", "b1"}, {"wait", "--batch", "b1", "b1"}} {
		out, errOut, code := run(t, ns, args...)
		if code != 1 || !strings.Contains(out, "batch b1: 1 tasks, 1 CANCELLED") || !strings.Contains(errOut, "1 of 1 tasks not DONE") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 1 and the batch's summary", args, code, out, errOut)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"wait"}, "batch: give the batch id"},
		{[]string{"wait", "b1", "b2"}, "batch: one batch id expected, got 2"},
		{[]string{"wait", "--batch", "b2", "b1"}, `batch: the argument "b1" and --batch "b2" differ`},
		{[]string{"wait", "nobatch"}, "batch nobatch has no tasks"},
	} {
		_, errOut, code := run(t, ns, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
}
