package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/workqueue"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toConnect maps an error from the coordination packages to a Connect
// error with a message for the worker. etcd's own errors are not passed
// through: they say "etcd unavailable" and are logged by the caller.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var inv *workqueue.InvalidError
	var cinv *configdoc.InvalidError
	var ce *connect.Error
	var qe *workqueue.QuotaError
	var lto *namedlock.TimeoutError
	switch {
	case errors.As(err, &qe):
		return connect.NewError(connect.CodeResourceExhausted, qe)
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &inv), errors.As(err, &cinv):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, configdoc.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New(strings.TrimPrefix(err.Error(), "configdoc: ")))
	case errors.As(err, &lto):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, namedlock.ErrLocked):
		return connect.NewError(connect.CodeAborted, errors.New("lock is held or awaited by another session"))
	case errors.Is(err, namedlock.ErrNotHeld):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("lock is not held by this session: never taken, already released, or lost with its lease"))
	case errors.Is(err, namedlock.ErrAlreadyHeld):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this session already holds or awaits the lock; locks are not reentrant"))
	case errors.Is(err, namedlock.ErrSessionClosed):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the session closed while waiting for the lock"))
	case errors.Is(err, namedlock.ErrLockLeaseLost):
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: the lock lease expired, or etcd could not confirm it in time, while waiting; retry"))
	case errors.Is(err, workqueue.ErrClaimLost):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("claim lost: the task was claimed again, returned to the queue or already finished; discard this attempt's output"))
	case errors.Is(err, coord.ErrUnknownSession):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("session is not open: call Attach and keep its stream open"))
	case errors.Is(err, workqueue.ErrDraining):
		return connect.NewError(connect.CodeUnavailable, errors.New("sidecar is shutting down"))
	case errors.Is(err, coord.ErrNoLease):
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: the sidecar holds no lease that etcd confirmed lately; retry"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return etcdOrInternal(err)
}

// etcdOrInternal maps what is left: etcd saying it cannot serve now
// (UNAVAILABLE: retry), etcd refusing a request for its size or for lack
// of space (RESOURCE_EXHAUSTED: retrying the same will not help), and
// everything else, which nobody expected: INTERNAL, with the cause kept
// for the sidecar's log (LogInternal) and not shown to the worker.
func etcdOrInternal(err error) error {
	// Transient although etcd files some of them under other codes: a
	// lease that etcd dropped before the sidecar noticed (it is granted a
	// new one), an apply backlog (too many requests), a read at a
	// compacted or not yet applied revision, no endpoint reachable.
	for _, transient := range []error{rpctypes.ErrLeaseNotFound, rpctypes.ErrTooManyRequests, rpctypes.ErrCompacted,
		rpctypes.ErrFutureRev, clientv3.ErrNoAvailableEndpoints} {
		if errors.Is(err, transient) {
			return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: "+transient.Error()+"; retry"))
		}
	}
	code := codes.Unknown
	desc := ""
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code, desc = ee.Code(), ee.Error()
	} else if st, ok := status.FromError(err); ok {
		code, desc = st.Code(), st.Message()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: "+desc+"; retry"))
	case codes.ResourceExhausted:
		return connect.NewError(connect.CodeResourceExhausted, errors.New("etcd refused the request: "+desc))
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrTooManyOps) {
		return connect.NewError(connect.CodeResourceExhausted, errors.New("etcd refused the request: "+desc))
	}
	return connect.NewError(connect.CodeInternal, &internalError{cause: err})
}

// internalError is an error the sidecar did not expect. Its message says
// so without internals; LogInternal logs the cause.
type internalError struct{ cause error }

func (e *internalError) Error() string {
	return "internal error in the sidecar (logged there with this call's trace id)"
}
func (e *internalError) Unwrap() error { return e.cause }

// LogInternal returns an interceptor that logs the cause of every
// INTERNAL error a handler returns, and records the caller (uid, pid) on
// each call's span. It goes after the tracing interceptor.
func LogInternal(log *slog.Logger) connect.Interceptor { return internalLogger{log} }

type internalLogger struct{ log *slog.Logger }

func (l internalLogger) report(ctx context.Context, procedure string, err error) {
	var ie *internalError
	if errors.As(err, &ie) {
		l.log.ErrorContext(ctx, "internal error", "procedure", procedure, "err", ie.cause)
	}
}

// markPeer records the caller (the socket's peer credentials) on the
// call's span.
func markPeer(ctx context.Context) {
	if p, ok := PeerFrom(ctx); ok {
		trace.SpanFromContext(ctx).SetAttributes(attrPeerUID.Int64(int64(p.UID)), attrPeerPID.Int64(int64(p.PID)))
	}
}

// Span attributes of the caller.
var (
	attrPeerUID = attribute.Key("baton.peer.uid")
	attrPeerPID = attribute.Key("baton.peer.pid")
)

func (l internalLogger) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		markPeer(ctx)
		resp, err := next(ctx, req)
		l.report(ctx, req.Spec().Procedure, err)
		return resp, err
	}
}

func (l internalLogger) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l internalLogger) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		markPeer(ctx)
		err := next(ctx, conn)
		l.report(ctx, conn.Spec().Procedure, err)
		return err
	}
}

// EtcdTimeout bounds the etcd round trips made for one worker request, so
// that a worker gets UNAVAILABLE instead of hanging while etcd is away.
const EtcdTimeout = 10 * time.Second

func etcdContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, EtcdTimeout)
}

// rpcErr maps err like toConnect, except that running out of EtcdTimeout
// while the caller is still waiting means etcd is unavailable.
func rpcErr(caller context.Context, err error) error {
	if err != nil && caller.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: no answer within "+EtcdTimeout.String()+"; retry"))
	}
	return toConnect(err)
}

func invalidArg(field, msg string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+msg))
}
