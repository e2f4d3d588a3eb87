package telemetry

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// leaseKeepAlive is the etcd method of the lease keepalive stream.
const leaseKeepAlive = "/etcdserverpb.Lease/LeaseKeepAlive"

// EtcdDialOptions returns the gRPC options that measure the sidecar's etcd
// client: the round-trip time of every unary request
// (baton_etcd_round_trip_seconds) and the health of the lease keepalive
// stream (baton_lease_keepalive_failures_total,
// baton_lease_keepalive_age_seconds). They chain after the etcd client's
// own retry interceptor, so each attempt is measured. On a nil *Metrics it
// returns nothing.
func (m *Metrics) EtcdDialOptions() []grpc.DialOption {
	if m == nil {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(m.etcdUnary),
		grpc.WithChainStreamInterceptor(m.etcdStream),
	}
}

func (m *Metrics) etcdUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.etcdRTT.WithLabelValues(methodName(method), outcome).Observe(time.Since(start).Seconds())
	return err
}

func (m *Metrics) etcdStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if method != leaseKeepAlive {
		return cs, err
	}
	if err != nil {
		if !cancelled(ctx, err) {
			m.keepaliveFailures.Inc()
		}
		return cs, err
	}
	return &keepaliveStream{ClientStream: cs, ctx: ctx, m: m}, nil
}

// keepaliveStream watches the lease keepalive stream: every response is
// etcd confirming the lease; a receive error is the stream failing (the
// etcd client opens a new one).
type keepaliveStream struct {
	grpc.ClientStream
	ctx context.Context // the caller's: the stream's own ends with any error
	m   *Metrics
}

func (s *keepaliveStream) RecvMsg(msg any) error {
	err := s.ClientStream.RecvMsg(msg)
	if err == nil {
		s.m.lastKeepalive.Store(time.Now().UnixNano())
		return nil
	}
	if !cancelled(s.ctx, err) {
		s.m.keepaliveFailures.Inc()
	}
	return err
}

// cancelled reports whether err is the caller giving up (shutdown), not a
// failure.
func cancelled(ctx context.Context, err error) bool {
	return ctx.Err() != nil || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)
}

// methodName is the last part of a gRPC method, "/etcdserverpb.KV/Range" →
// "Range": a label from etcd's fixed API.
func methodName(full string) string {
	return full[strings.LastIndexByte(full, '/')+1:]
}
