package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/namedlock"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Regression (hardening issue, item 7): every error the mapping did not
// recognise became UNAVAILABLE "etcd unavailable" with its internals, so
// workers retried corrupt data forever.
func TestErrorsSayWhatHappened(t *testing.T) {
	cases := []struct {
		err  error
		code connect.Code
	}{
		{rpctypes.ErrNoLeader, connect.CodeUnavailable},
		{fmt.Errorf("claim: %w", rpctypes.ErrTimeout), connect.CodeUnavailable},
		{status.Error(codes.Unavailable, "connection refused"), connect.CodeUnavailable},
		{rpctypes.ErrNoSpace, connect.CodeResourceExhausted},
		{fmt.Errorf("waiting for a task: %w", rpctypes.ErrLeaseNotFound), connect.CodeUnavailable},
		{rpctypes.ErrTooManyRequests, connect.CodeUnavailable},
		{rpctypes.ErrCompacted, connect.CodeUnavailable},
		{rpctypes.ErrRequestTooLarge, connect.CodeResourceExhausted},
		{rpctypes.ErrTooManyOps, connect.CodeResourceExhausted},
		{status.Error(codes.ResourceExhausted, "trying to send message larger than max"), connect.CodeResourceExhausted},
		{errors.New("task t1: bad spec: unexpected end of JSON input"), connect.CodeInternal},
		// A lock granted after its lease's trust window is answered as a
		// lease lost while waiting, never as held.
		{namedlock.ErrLockLeaseLost, connect.CodeUnavailable},
		// So is a claim read past the sidecar lease's trust window.
		{fmt.Errorf("task t1 was claimed under a lease etcd last confirmed 7s ago: %w", coord.ErrNoLease), connect.CodeUnavailable},
	}
	for _, c := range cases {
		got := toConnect(c.err)
		if connect.CodeOf(got) != c.code {
			t.Errorf("%v: %v, want %v", c.err, connect.CodeOf(got), c.code)
		}
	}
	internal := toConnect(errors.New("task t1: bad spec at q/ready/x"))
	if strings.Contains(internal.Error(), "q/ready") || strings.Contains(internal.Error(), "unavailable") {
		t.Fatalf("internal error shows internals or says unavailable: %v", internal)
	}
	var ie *internalError
	if !errors.As(internal, &ie) || !strings.Contains(ie.cause.Error(), "q/ready") {
		t.Fatalf("the cause is not kept for the log: %v", internal)
	}
}

// The caller's uid and pid, from the socket's peer credentials, are on
// every call's span (hardening issue: caller identity in spans).
func TestCallerOnTheSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("t").Start(context.WithValue(context.Background(), peerKey{}, Peer{UID: 1001, GID: 100, PID: 4242}), "call")
	next := func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, nil }
	if _, err := LogInternal(slog.New(slog.DiscardHandler)).WrapUnary(next)(ctx, connect.NewRequest(&struct{}{})); err != nil {
		t.Fatal(err)
	}
	span.End()
	got := map[string]int64{}
	for _, kv := range rec.Ended()[0].Attributes() {
		got[string(kv.Key)] = kv.Value.AsInt64()
	}
	if got["baton.peer.uid"] != 1001 || got["baton.peer.pid"] != 4242 {
		t.Fatalf("span attributes %v, want the caller's uid 1001 and pid 4242", got)
	}
}
