package server

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/namedlock"
	"google.golang.org/protobuf/types/known/durationpb"
)

// MaxLockWait bounds Lock's wait, and is the wait of a Lock without one.
const MaxLockWait = namedlock.MaxWait

// LockHandler implements LockService on namedlock.Locks, which decides
// what a request means (waits, wait 0, a caller that left) and observes
// it; the handler checks arguments and maps errors to codes.
type LockHandler struct {
	Locks    *namedlock.Locks
	Sessions *coord.Sessions
	Logger   *slog.Logger
}

var _ batonv1connect.LockServiceHandler = (*LockHandler)(nil)

// lockArgs checks a lock request's name and session.
func (h *LockHandler) lockArgs(name, session string) (*coord.Session, error) {
	if err := namedlock.ValidateLockName(name); err != nil {
		return nil, invalidArg("name", err.Error())
	}
	if session == "" {
		return nil, invalidArg("session", "is required: open a session with TaskService.Attach and keep its stream open")
	}
	s, err := h.Sessions.Get(session)
	if err != nil {
		return nil, toConnect(err)
	}
	return s, nil
}

// lockWait reads Lock's wait: MaxLockWait when absent, and a longer one is
// cut to MaxLockWait.
func lockWait(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return MaxLockWait, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidArg("wait", "not a valid duration: "+err.Error())
	}
	if d.GetSeconds() < 0 || d.GetNanos() < 0 {
		return 0, invalidArg("wait", "must not be negative")
	}
	if d.GetSeconds() >= int64(MaxLockWait/time.Second) {
		return MaxLockWait, nil
	}
	return d.AsDuration(), nil
}

// Lock takes the lock, waiting up to the request's wait.
func (h *LockHandler) Lock(ctx context.Context, req *connect.Request[batonv1.LockRequest]) (*connect.Response[batonv1.LockResponse], error) {
	sess, err := h.lockArgs(req.Msg.GetName(), req.Msg.GetSession())
	if err != nil {
		return nil, err
	}
	wait, err := lockWait(req.Msg.GetWait())
	if err != nil {
		return nil, err
	}
	token, err := h.Locks.Lock(ctx, sess, req.Msg.GetName(), wait)
	if err != nil {
		return nil, rpcErr(ctx, err)
	}
	h.Logger.DebugContext(ctx, "lock taken", "lock", req.Msg.GetName(), "session", sess.ID, "token", token)
	return connect.NewResponse(&batonv1.LockResponse{FencingToken: token}), nil
}

// TryLock takes the lock only if it is free.
func (h *LockHandler) TryLock(ctx context.Context, req *connect.Request[batonv1.TryLockRequest]) (*connect.Response[batonv1.TryLockResponse], error) {
	sess, err := h.lockArgs(req.Msg.GetName(), req.Msg.GetSession())
	if err != nil {
		return nil, err
	}
	token, err := h.Locks.TryLock(ctx, sess, req.Msg.GetName())
	if err != nil {
		return nil, rpcErr(ctx, err)
	}
	return connect.NewResponse(&batonv1.TryLockResponse{FencingToken: token}), nil
}

// Unlock releases a lock the session holds.
func (h *LockHandler) Unlock(ctx context.Context, req *connect.Request[batonv1.UnlockRequest]) (*connect.Response[batonv1.UnlockResponse], error) {
	sess, err := h.lockArgs(req.Msg.GetName(), req.Msg.GetSession())
	if err != nil {
		return nil, err
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	if err := h.Locks.Unlock(ectx, sess, req.Msg.GetName()); err != nil {
		return nil, rpcErr(ctx, err)
	}
	return connect.NewResponse(&batonv1.UnlockResponse{}), nil
}
