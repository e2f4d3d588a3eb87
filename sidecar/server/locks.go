package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/telemetry"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
)

// MaxLockWait bounds Lock's wait, and is the wait of a Lock without one.
const MaxLockWait = 10 * time.Minute

// LockHandler implements LockService on coord.Locks.
type LockHandler struct {
	Locks    *coord.Locks
	Sessions *coord.Sessions
	Logger   *slog.Logger
	// Metrics and TracerProvider observe lock waits (baton_lock_wait_seconds,
	// span baton.lock.wait); both may be nil.
	Metrics        *telemetry.Metrics
	TracerProvider trace.TracerProvider
}

var _ batonv1connect.LockServiceHandler = (*LockHandler)(nil)

// lockArgs checks a lock request's name and session.
func (h *LockHandler) lockArgs(name, session string) (*coord.Session, error) {
	if err := coord.ValidateLockName(name); err != nil {
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
	ctx, obs := telemetry.StartLockWait(ctx, h.TracerProvider, h.Metrics, req.Msg.GetName(), sess.ID)
	var token int64
	if wait == 0 {
		ectx, cancel := etcdContext(ctx)
		token, err = h.Locks.TryLock(ectx, sess, req.Msg.GetName())
		cancel()
		if errors.Is(err, coord.ErrLocked) {
			err = connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("lock %q is held by another session (wait 0s)", req.Msg.GetName()))
			obs.End(telemetry.LockBusy, 0, err)
			return nil, err
		}
	} else {
		wctx, cancel := context.WithTimeout(ctx, wait)
		token, err = h.Locks.Lock(wctx, sess, req.Msg.GetName())
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("lock %q not obtained within %v", req.Msg.GetName(), wait))
			obs.End(telemetry.LockTimeout, 0, err)
			return nil, err
		}
	}
	if err == nil && ctx.Err() != nil {
		// Taken just as the caller went away: nobody would know it holds
		// the lock, so give it back.
		uctx, cancel := context.WithTimeout(context.Background(), EtcdTimeout)
		_ = h.Locks.Unlock(uctx, sess, req.Msg.GetName())
		cancel()
		err = ctx.Err()
	}
	if err != nil {
		outcome := telemetry.LockError
		if ctx.Err() != nil || errors.Is(err, coord.ErrSessionClosed) {
			outcome = telemetry.LockCancelled
		}
		obs.End(outcome, 0, err)
		return nil, rpcErr(ctx, err)
	}
	obs.End(telemetry.LockAcquired, token, nil)
	h.Logger.DebugContext(ctx, "lock taken", "lock", req.Msg.GetName(), "session", sess.ID, "token", token)
	return connect.NewResponse(&batonv1.LockResponse{FencingToken: token}), nil
}

// TryLock takes the lock only if it is free.
func (h *LockHandler) TryLock(ctx context.Context, req *connect.Request[batonv1.TryLockRequest]) (*connect.Response[batonv1.TryLockResponse], error) {
	sess, err := h.lockArgs(req.Msg.GetName(), req.Msg.GetSession())
	if err != nil {
		return nil, err
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	start := time.Now()
	token, err := h.Locks.TryLock(ectx, sess, req.Msg.GetName())
	switch {
	case err == nil:
		h.Metrics.ObserveLockWait(time.Since(start), telemetry.LockAcquired)
	case errors.Is(err, coord.ErrLocked):
		h.Metrics.ObserveLockWait(time.Since(start), telemetry.LockBusy)
	default:
		h.Metrics.ObserveLockWait(time.Since(start), telemetry.LockError)
	}
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
