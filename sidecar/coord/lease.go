package coord

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrNoLease is returned while the sidecar holds no live lease: at start
// before etcd answered, or after a lease was lost and before a new one was
// granted.
var ErrNoLease = errors.New("coord: no live etcd lease")

// LeaseKeeper keeps one live etcd lease for the sidecar, granting a new one
// whenever the current one is lost.
//
// Its methods are safe for concurrent use.
type LeaseKeeper struct {
	cli    *clientv3.Client
	ttl    int
	logger *slog.Logger
	clock  clockwork.Clock

	mu      sync.Mutex
	cur     *concurrency.Session
	trust   *Trust        // cur's trust window; nil with cur
	changed chan struct{} // closed and replaced when cur changes

	granted, grantFailures, lost atomic.Int64
}

// LeaseStats counts what a LeaseKeeper went through since it started.
type LeaseStats struct {
	// Granted: leases granted.
	Granted int64
	// GrantFailures: attempts to grant a lease that failed (etcd away).
	GrantFailures int64
	// Lost: leases that ended while the keeper was running: they expired
	// because keepalives did not reach etcd within the TTL, or were revoked
	// by someone else. Everything bound to them was deleted.
	Lost int64
}

// Stats returns the counters. Safe for concurrent use.
func (k *LeaseKeeper) Stats() LeaseStats {
	return LeaseStats{Granted: k.granted.Load(), GrantFailures: k.grantFailures.Load(), Lost: k.lost.Load()}
}

// NewLeaseKeeper returns a keeper for leases of ttl (rounded up to whole
// seconds, at least 1s). Call Run to start it. WithClock sets the clock of
// its retries (default: the wall clock).
func NewLeaseKeeper(cli *clientv3.Client, ttl time.Duration, logger *slog.Logger, opts ...Option) *LeaseKeeper {
	secs := int((ttl + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &LeaseKeeper{cli: cli, ttl: secs, logger: logger, clock: options(opts).clock, changed: make(chan struct{})}
}

// TTL returns the lease's time to live.
func (k *LeaseKeeper) TTL() time.Duration { return time.Duration(k.ttl) * time.Second }

// Session returns the current etcd session, or ErrNoLease and a channel
// that is closed when the session changes.
func (k *LeaseKeeper) Session() (*concurrency.Session, <-chan struct{}, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil {
		return nil, k.changed, ErrNoLease
	}
	select {
	case <-k.cur.Done():
		return nil, k.changed, ErrNoLease
	default:
	}
	return k.cur, k.changed, nil
}

// WaitSession waits until a session is live or ctx ends.
func (k *LeaseKeeper) WaitSession(ctx context.Context) (*concurrency.Session, error) {
	for {
		s, changed, err := k.Session()
		if err == nil {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Trust returns the trust window of lease id while it is the keeper's
// current lease, or nil: before a sidecar answers its worker that it holds
// something bound to id, it checks Trust(id).Trusted() (see the package
// doc).
func (k *LeaseKeeper) Trust(id clientv3.LeaseID) *Trust {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil || k.cur.Lease() != id {
		return nil
	}
	return k.trust
}

func (k *LeaseKeeper) set(s *concurrency.Session, t *Trust) {
	k.mu.Lock()
	k.cur, k.trust = s, t
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

// Run grants leases and keeps them alive until ctx is cancelled. While
// etcd refuses or does not answer it retries, 100ms after the first
// failure and twice as long after each further one, up to 5s. It does
// not revoke the last lease on return; call Revoke for that, after the state
// bound to the lease has been given back.
func (k *LeaseKeeper) Run(ctx context.Context) error {
	var follow sync.WaitGroup // the trust windows' keepalive readers
	defer follow.Wait()
	backoff := 100 * time.Millisecond
	for {
		sent := k.clock.Now() // etcd starts the TTL after this
		s, answers, err := k.grant(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			k.grantFailures.Add(1)
			k.logger.Warn("granting etcd lease failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-k.clock.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		k.granted.Add(1)
		k.logger.Info("etcd lease granted", "lease", int64(s.Lease()), "ttl_s", k.ttl)
		trust := NewTrust(k.TTL(), sent, WithClock(k.clock))
		follow.Add(1)
		go func() { defer follow.Done(); trust.Follow(answers) }() // ends with ctx or the lease
		k.set(s, trust)
		select {
		case <-s.Done():
			if ctx.Err() != nil {
				return nil
			}
			k.lost.Add(1)
			k.logger.Warn("etcd lease lost; granting a new one", "lease", int64(s.Lease()))
			k.set(nil, nil)
		case <-ctx.Done():
			return nil
		}
	}
}

// grant grants a lease and keeps it alive until ctx ends: the session, and
// the keepalive's answers for its trust window (the same keepalive: etcd's
// client sends one per lease whatever the number of listeners; asked for
// before the session's, so that it hears the first answer too).
func (k *LeaseKeeper) grant(ctx context.Context) (*concurrency.Session, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	g, err := k.cli.Grant(ctx, int64(k.ttl))
	if err != nil {
		return nil, nil, err
	}
	answers, err := k.cli.KeepAlive(ctx, g.ID)
	if err == nil {
		var s *concurrency.Session
		if s, err = concurrency.NewSession(k.cli, concurrency.WithLease(g.ID), concurrency.WithContext(ctx)); err == nil {
			return s, answers, nil
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, _ = k.cli.Revoke(rctx, g.ID)
	return nil, nil, err
}

// Revoke revokes the current lease, so that everything bound to it is
// deleted at once instead of after the TTL.
func (k *LeaseKeeper) Revoke(ctx context.Context) error {
	k.mu.Lock()
	s := k.cur
	k.cur, k.trust = nil, nil
	k.mu.Unlock()
	if s == nil {
		return nil
	}
	_, err := k.cli.Revoke(ctx, s.Lease())
	return err
}
