package server

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
	// The descriptors of grpc.health.v1, for reflection: grpcurl resolves
	// grpc.health.v1.Health/Check through them (connect's grpchealth
	// registers its copy under another package name).
	_ "google.golang.org/grpc/health/grpc_health_v1"
)

// HealthChecker answers the gRPC health service (grpc.health.v1.Health) on
// the socket: SERVING while Ready returns nil, NOT_SERVING otherwise, for
// the whole server ("") and for each Baton service; other names are
// NOT_FOUND. Check runs Ready on every call, so probes see the present
// state. Watch is not supported.
type HealthChecker struct {
	Ready func(ctx context.Context) error
}

var _ grpchealth.Checker = HealthChecker{}

// Check implements grpchealth.Checker.
func (h HealthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", batonv1connect.TaskServiceName, batonv1connect.LockServiceName, batonv1connect.ConfigServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, errors.New("unknown service "+req.Service))
	}
	if h.Ready != nil && h.Ready(ctx) != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Health returns an extra for Handler that serves the gRPC health service
// with checker.
func Health(checker grpchealth.Checker, opts ...connect.HandlerOption) func(*http.ServeMux) {
	return func(mux *http.ServeMux) {
		mux.Handle(grpchealth.NewHandler(checker, opts...))
	}
}
