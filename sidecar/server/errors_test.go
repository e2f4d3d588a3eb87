package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
