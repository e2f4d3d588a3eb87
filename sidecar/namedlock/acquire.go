package namedlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// MaxWait bounds Lock's wait: a longer wait is cut to it.
const MaxWait = 10 * time.Minute

// tryTimeout bounds the etcd round trips of a Lock with wait 0 or a
// TryLock; giveBackTimeout bounds giving back a lock nobody asked for any
// more.
const (
	tryTimeout      = 10 * time.Second
	giveBackTimeout = 10 * time.Second
)

// errWaitOver is the cause of a Lock's wait ending at its deadline.
var errWaitOver = errors.New("namedlock: the wait is over")

// Lock takes the named lock for the session and returns its fencing
// token. It waits up to wait, measured on the Locks' clock (at most
// MaxWait; a longer wait is cut to it), then returns a *TimeoutError. Wait
// 0 does not wait: a lock that is held or awaited is a *TimeoutError at
// once, and nothing is left in its line.
//
// Waiting ends early with ErrSessionClosed when the session closes,
// with ErrLockLeaseLost when the lock lease expires (or, once granted, when
// etcd last confirmed the lease longer ago than its trust window: the
// grant is given back, see the package doc) and with ctx's error
// when ctx ends (the caller left). A lock taken just as ctx ended is given
// back, since nobody would know it holds it, and ctx's error returned. On
// every error the waiter's key is removed, so an abandoned wait never
// blocks the waiters behind it.
//
// Each call is one baton.lock.wait span and one Observer.LockWaited.
func (l *Locks) Lock(ctx context.Context, sess *coord.Session, name string, wait time.Duration) (int64, error) {
	wait = min(max(wait, 0), MaxWait)
	w := l.startWait(ctx, name, sess)
	var token int64
	var err error
	if wait == 0 {
		tctx, cancel := context.WithTimeout(w.ctx, tryTimeout)
		token, err = l.acquire(tctx, sess, name, true, 0)
		cancel()
		if errors.Is(err, ErrLocked) {
			err = &TimeoutError{Name: name}
		}
	} else {
		token, err = l.acquire(w.ctx, sess, name, false, wait)
	}
	token, err = l.settle(ctx, sess, name, token, err)
	w.end(outcomeOf(ctx, wait == 0, err), token, err)
	return token, err
}

// TryLock takes the named lock only if nobody holds or waits for it;
// otherwise it returns ErrLocked at once. Like Lock, it gives back a lock
// taken just as ctx ended.
func (l *Locks) TryLock(ctx context.Context, sess *coord.Session, name string) (int64, error) {
	w := l.startWait(ctx, name, sess)
	tctx, cancel := context.WithTimeout(w.ctx, tryTimeout)
	token, err := l.acquire(tctx, sess, name, true, 0)
	cancel()
	token, err = l.settle(ctx, sess, name, token, err)
	w.end(outcomeOf(ctx, true, err), token, err)
	return token, err
}

// settle gives back a lock taken for a caller that left (ctx ended): the
// lock would otherwise stay held by a session that does not know it holds
// it, until the session ends.
func (l *Locks) settle(ctx context.Context, sess *coord.Session, name string, token int64, err error) (int64, error) {
	if err != nil || ctx.Err() == nil {
		return token, err
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveBackTimeout)
	defer cancel()
	if uerr := l.Unlock(uctx, sess, name); uerr != nil {
		l.logger.Warn("giving back a lock whose caller left failed; the session's end releases it", "lock", name, "session", sess.ID, "err", uerr)
	}
	return 0, ctx.Err()
}

// outcomeOf classifies how a Lock or TryLock ended.
func outcomeOf(ctx context.Context, try bool, err error) Outcome {
	var te *TimeoutError
	switch {
	case err == nil:
		return OutcomeAcquired
	case errors.Is(err, ErrLocked), errors.As(err, &te) && try:
		return OutcomeBusy
	case errors.As(err, &te):
		return OutcomeTimeout
	case ctx.Err() != nil, errors.Is(err, ErrSessionClosed):
		return OutcomeCancelled
	}
	return OutcomeError
}

// begin marks name busy for the session.
func (l *Locks) begin(sl *sessionLocks, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sl.closed {
		return ErrSessionClosed
	}
	if sl.busy[name] || sl.held[name] != nil {
		return ErrAlreadyHeld
	}
	sl.busy[name] = true
	return nil
}

// end clears the name's busy mark, unless the removal of an abandoned
// waiter key is still being retried (retryDrop clears it then).
func (l *Locks) end(sl *sessionLocks, name string, dropping bool) {
	if dropping {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(sl.busy, name)
}

// acquire queues for the lock (try: only if nobody is in line) and waits
// until it is held, ctx ends, the session closes, the lock lease is
// lost or, when wait > 0, wait passes on the clock (a *TimeoutError).
func (l *Locks) acquire(ctx context.Context, sess *coord.Session, name string, try bool, wait time.Duration) (int64, error) {
	if err := ValidateLockName(name); err != nil {
		return 0, fmt.Errorf("name: %w", err)
	}
	sl, err := l.state(sess)
	if err != nil {
		return 0, err
	}
	if err := l.begin(sl, name); err != nil {
		return 0, err
	}
	dropping := false
	defer func() { l.end(sl, name, dropping) }()

	es, trust, err := l.etcdSession(ctx, sl)
	if err != nil {
		return 0, err
	}
	// Stop waiting when the session closes, the lease is lost or
	// the wait is over.
	waitCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if wait > 0 {
		t := l.clock.AfterFunc(wait, func() { cancel(errWaitOver) })
		defer t.Stop()
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-sess.Done():
			cancel(ErrSessionClosed)
		case <-es.Done():
			cancel(ErrLockLeaseLost)
		case <-stop:
		}
	}()

	m := newMutex(l.cli, es.Lease(), name)
	if try {
		err = m.tryLock(waitCtx)
	} else {
		err = m.lock(waitCtx)
	}
	if err == nil {
		// Held, unless the lease was lost meanwhile: then watchLease has
		// already told the process about the locks it knew of, and this
		// one must not be handed out. Nor when etcd last confirmed the
		// lease longer ago than its trust window: the sidecar may have
		// been paused or cut off after etcd granted the lock, for long
		// enough that the lease expired and the next waiter holds the lock
		// now. The grant is then given back (its key removed below) and
		// answered as a lost lease, never as held.
		l.mu.Lock()
		live := !sl.closed && !isDone(es)
		trusted := trust.Trusted()
		if live && trusted {
			sl.held[name] = m
		}
		l.mu.Unlock()
		if live && trusted {
			return m.rev, nil
		}
		if live {
			l.logger.Warn("lock granted after its lease's trust window; giving it back",
				"lock", name, "token", m.rev, "session", sess.ID, "confirmed_ago", trust.Age(), "trust_window", trust.Window())
		}
		err = ErrLockLeaseLost
	}
	if !errors.Is(err, ErrLocked) && !l.dropWaiter(m) {
		l.mu.Lock()
		if !l.closed { // after Close the session's lease is revoked anyway
			dropping = true
			l.wg.Add(1)
			go l.retryDrop(sl, name, m, es)
		}
		l.mu.Unlock()
	}
	switch cause := context.Cause(waitCtx); {
	case cause == nil:
	case errors.Is(cause, ErrSessionClosed), errors.Is(cause, ErrLockLeaseLost):
		return 0, cause
	case errors.Is(cause, errWaitOver) && ctx.Err() == nil:
		return 0, &TimeoutError{Name: name, Wait: wait}
	}
	return 0, err
}

func isDone(es *concurrency.Session) bool {
	select {
	case <-es.Done():
		return true
	default:
		return false
	}
}

// dropWaiter deletes the waiter key of a failed Lock, including a put
// whose answer was lost, which would otherwise block every later waiter
// until the session ends. It reports whether the key is gone.
func (l *Locks) dropWaiter(m *mutex) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.remove(ctx); err != nil {
		l.logger.Warn("removing an abandoned lock waiter failed; retrying", "key", m.key, "err", err)
		return false
	}
	return true
}

// retryDrop keeps trying to remove an abandoned waiter key, every
// dropRetry on the clock, until it is gone, its lease ends (etcd removes it
// then) or Locks closes. Meanwhile the session's Lock calls for that name
// are refused (the name stays busy), so that none reuses the key about to
// be deleted.
func (l *Locks) retryDrop(sl *sessionLocks, name string, m *mutex, es *concurrency.Session) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(sl.busy, name)
		l.mu.Unlock()
	}()
	t := l.clock.NewTicker(dropRetry)
	defer t.Stop()
	for {
		select {
		case <-t.Chan():
		case <-es.Done():
			return
		case <-l.stop:
			return
		}
		if l.dropWaiter(m) {
			return
		}
	}
}

// Unlock releases the named lock held by the session. It returns
// ErrNotHeld when the session does not hold it, including when the lock
// was lost with its lease and someone else may hold it now.
func (l *Locks) Unlock(ctx context.Context, sess *coord.Session, name string) error {
	if err := ValidateLockName(name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	l.mu.Lock()
	sl := l.sessions[sess]
	var m *mutex
	if sl != nil {
		m = sl.held[name]
		if m != nil && sl.busy[name] {
			m = nil
		}
		if m != nil {
			sl.busy[name] = true
		}
	}
	l.mu.Unlock()
	if m == nil {
		return ErrNotHeld
	}
	ok, err := m.unlock(ctx)
	l.mu.Lock()
	delete(sl.busy, name)
	if err == nil {
		delete(sl.held, name)
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotHeld
	}
	return nil
}
