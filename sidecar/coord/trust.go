package coord

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TrustWindow returns how long after etcd last confirmed a lease of ttl a
// sidecar still answers as its holder: two thirds of the TTL (6.7s at the
// default 10s), and for TTLs under 3s a second more than the keepalive
// interval, at most the TTL (1s → 1s, 2s → 1.67s).
//
// etcd renews a lease when a keepalive reaches it, before its answer
// reaches the sidecar, so the lease lives at least until the keepalive's
// sending plus the TTL. The sidecar only knows when the answer arrived, so
// it keeps a third of the TTL for the answer's trip back. On the other side,
// etcd's client sends a keepalive a third of the TTL after the last answer,
// looking every 500ms, so answers normally come up to TTL/3 + 0.5s + a
// round trip apart; the window must be longer than that, or a live lease
// would be distrusted before each answer. Two thirds of the TTL is a second
// more than TTL/3 from 3s up; below, the window is that second more, which
// leaves less than a third of the TTL for the answer's trip (a pause longer
// than the TTL is still caught).
func TrustWindow(ttl time.Duration) time.Duration {
	return max(ttl*2/3, min(ttl/3+time.Second, ttl))
}

// Trust is the trust window of one lease: it records on the injected
// clock when etcd last confirmed the lease alive (its grant, each
// keepalive answer) and says whether that was recent enough
// (TrustWindow) to still act as the holder of what is bound to the lease.
// A sidecar paused (SIGSTOP, a stalled VM) or cut off from etcd for longer
// than that may have lost the lease without knowing it yet: etcd may have
// expired it and handed what was bound to it to someone else.
//
// Its methods are safe for concurrent use.
type Trust struct {
	clock  clockwork.Clock
	window time.Duration

	mu        sync.Mutex
	confirmed time.Time // written by Confirm: the granter, then Follow's goroutine
	answers   int64     // keepalive answers read by Follow; written by its goroutine
}

// NewTrust returns the trust window of a lease of ttl, confirmed at
// granted: the time on the clock before the grant was sent (etcd starts the
// TTL when the grant reaches it, after that). WithClock sets the clock
// (default: the wall clock).
func NewTrust(ttl time.Duration, granted time.Time, opts ...Option) *Trust {
	return &Trust{clock: options(opts).clock, window: TrustWindow(ttl), confirmed: granted}
}

// Confirm records that etcd confirmed the lease alive at at; an earlier
// time than one already recorded is ignored.
func (t *Trust) Confirm(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if at.After(t.confirmed) {
		t.confirmed = at
	}
}

// Follow confirms the lease at every keepalive answer read from ch (what
// clientv3.Lease.KeepAlive returned for it), on the clock, until ch closes:
// when the keepalive's context ends or etcd says the lease is gone. The
// caller runs it in a goroutine it owns.
func (t *Trust) Follow(ch <-chan *clientv3.LeaseKeepAliveResponse) {
	for resp := range ch {
		if resp.TTL <= 0 {
			continue
		}
		now := t.clock.Now()
		t.mu.Lock()
		t.answers++
		if now.After(t.confirmed) {
			t.confirmed = now
		}
		t.mu.Unlock()
	}
}

// KeepaliveAnswers returns how many keepalive answers Follow has read.
func (t *Trust) KeepaliveAnswers() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.answers
}

// LastConfirmed returns when etcd last confirmed the lease, on the clock.
func (t *Trust) LastConfirmed() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.confirmed
}

// Window returns the trust window.
func (t *Trust) Window() time.Duration { return t.window }

// Age returns how long ago, on the clock, etcd last confirmed the lease.
func (t *Trust) Age() time.Duration { return t.clock.Since(t.LastConfirmed()) }

// Trusted reports whether etcd confirmed the lease at most Window ago: the
// lease is then known to be alive and what is bound to it still held.
func (t *Trust) Trusted() bool { return t.Age() <= t.window }
