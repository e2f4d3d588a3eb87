package sidecar_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Socket round trips, with the sidecar in this process. Run with
//
//	go test -run '^$' -bench Socket ./sidecar

func benchSidecar(b *testing.B) *sidecartest.Sidecar {
	b.Helper()
	sc, _ := benchSidecarNS(b)
	return sc
}

// BenchmarkSocketRoundTrip is one Next on an empty queue with no wait: the
// socket, HTTP/2, Connect and the dispatcher's bookkeeping, no etcd.
func BenchmarkSocketRoundTrip(b *testing.B) {
	sc := benchSidecar(b)
	ctx := context.Background()
	// One task through first: the sidecar has its lease and its window.
	submit(b, sc, &batonv1.TaskSpec{Id: "warm", Payload: payload(b, map[string]any{})})
	task := next(b, sc, 10*time.Second, "")
	if task == nil {
		b.Fatal("no task")
	}
	if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		b.Fatal(err)
	}
	req := &batonv1.NextRequest{Wait: durationpb.New(0)}
	for b.Loop() {
		resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(req))
		if err != nil || resp.Msg.Task != nil {
			b.Fatalf("next: %v, %v", resp, err)
		}
	}
}

// BenchmarkSocketClaimComplete is a worker's cycle on a queue with tasks
// waiting: Next (one claim transaction) then Complete (one transaction),
// both through the socket, under a worker session.
func BenchmarkSocketClaimComplete(b *testing.B) {
	sc := benchSidecar(b)
	ctx := context.Background()
	specs := make([]*batonv1.TaskSpec, 0, 500)
	for i := 0; i < b.N; i++ {
		specs = append(specs, &batonv1.TaskSpec{Id: fmt.Sprintf("t-%07d", i), Payload: payload(b, map[string]any{"syn_text": "hello"})})
		if len(specs) == cap(specs) || i == b.N-1 {
			submit(b, sc, specs...)
			specs = specs[:0]
		}
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := sc.Client.Tasks.Attach(actx, connect.NewRequest(&batonv1.AttachRequest{Process: "bench"}))
	if err != nil || !stream.Receive() {
		b.Fatalf("attach: %v %v", err, stream.Err())
	}
	defer stream.Close()
	session := stream.Msg().Session
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		task := next(b, sc, 5*time.Second, session)
		if task == nil {
			b.Fatal("no task")
		}
		if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			b.Fatal(err)
		}
	}
}
