package sidecar_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Regressions found by FuzzRequests and FuzzDurationArgs (sidecar/server):
// a Heartbeat with progress NaN was accepted (NaN compares false with
// both bounds), and a Duration too long for time.Duration was reported as
// its saturated value ("2562047h47m16.854775807s is over the limit"), not
// as what the caller sent.
func TestRequestArgsFoundByFuzzing(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()

	submit(t, sc, &batonv1.TaskSpec{Id: "nan", Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	_, err := sc.Client.Tasks.Heartbeat(ctx, connect.NewRequest(&batonv1.HeartbeatRequest{Claim: task.Claim, Progress: math.NaN()}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "progress: NaN") {
		t.Errorf("heartbeat with progress NaN: %v, want INVALID_ARGUMENT naming progress", err)
	}
	complete(t, sc, task)

	longest := &durationpb.Duration{Seconds: 315_576_000_000} // 10,000 years, the longest valid Duration
	for _, c := range []struct {
		field string
		call  func() error
	}{
		{"tasks[0].timeout", func() error {
			_, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{
				{Id: "long", Payload: payload(t, map[string]any{}), Timeout: longest}}}))
			return err
		}},
		{"wait", func() error {
			_, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: longest}))
			return err
		}},
	} {
		err := c.call()
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), c.field+": 315576000000s is over the limit") {
			t.Errorf("%s of 315576000000s: %v, want INVALID_ARGUMENT naming the field and the value sent", c.field, err)
		}
	}
}
