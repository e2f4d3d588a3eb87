package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/workqueue"
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
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &inv), errors.As(err, &cinv):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, configdoc.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New(strings.TrimPrefix(err.Error(), "configdoc: ")))
	case errors.Is(err, coord.ErrLocked):
		return connect.NewError(connect.CodeAborted, errors.New("lock is held or awaited by another session"))
	case errors.Is(err, coord.ErrNotHeld):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("lock is not held by this session: never taken, already released, or lost with its lease"))
	case errors.Is(err, coord.ErrAlreadyHeld):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this session already holds or awaits the lock; locks are not reentrant"))
	case errors.Is(err, coord.ErrSessionClosed):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the session closed while waiting for the lock"))
	case errors.Is(err, coord.ErrLockLeaseLost):
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: the lock lease expired while waiting; retry"))
	case errors.Is(err, workqueue.ErrClaimLost):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("claim lost: the task was claimed again, returned to the queue or already finished; discard this attempt's output"))
	case errors.Is(err, coord.ErrUnknownSession):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("session is not open: call Attach and keep its stream open"))
	case errors.Is(err, workqueue.ErrDraining):
		return connect.NewError(connect.CodeUnavailable, errors.New("sidecar is shutting down"))
	case errors.Is(err, coord.ErrNoLease):
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: the sidecar holds no lease yet; retry"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		return connect.NewError(connect.CodeUnavailable, errors.New("etcd unavailable: "+err.Error()))
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
