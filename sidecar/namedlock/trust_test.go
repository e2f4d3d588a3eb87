package namedlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/faultproxy"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/internal/etcdtest"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// trustTTL is the lock lease's TTL in the trust window tests: etcd's
// client sends keepalives every third of it (20s of real time), so after
// the first one none is in flight while a test holds etcd's answers, and
// the lease never expires in etcd during a test.
const trustTTL = 60 * time.Second

// lateGrant is one sidecar (locks, on a fake clock, reaching etcd through
// link) whose session waits for a lock held by another sidecar's session
// (holder, reaching etcd directly).
type lateGrant struct {
	link     *faultproxy.Link
	direct   *clientv3.Client
	clock    *clockwork.FakeClock
	locks    *Locks
	holder   *Locks
	sessions *coord.Sessions
}

func newLateGrant(t *testing.T) *lateGrant {
	t.Helper()
	link, err := faultproxy.NewLink([]string{etcdtest.Endpoint(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close)
	direct, via := etcdtest.ClientsVia(t, link.Endpoints())
	g := &lateGrant{link: link, direct: direct, clock: clockwork.NewFakeClock(), sessions: coord.NewSessions()}
	g.locks = New(via, Config{TTL: trustTTL, WorkerID: "paused", Clock: g.clock})
	g.holder = New(direct, Config{TTL: trustTTL, WorkerID: "holder"})
	t.Cleanup(func() {
		g.link.UnpauseRx() // a failed test may leave answers held
		g.locks.Close()
		g.holder.Close()
	})
	return g
}

func (g *lateGrant) open(t *testing.T, process string) *coord.Session {
	s := g.sessions.Open(process)
	t.Cleanup(func() { g.sessions.Close(s) })
	return s
}

// trust returns the trust window of the session's lock lease.
func (g *lateGrant) trust(t *testing.T, s *coord.Session) *coord.Trust {
	t.Helper()
	g.locks.mu.Lock()
	defer g.locks.mu.Unlock()
	sl := g.locks.sessions[s]
	if sl == nil || sl.trust == nil {
		t.Fatal("the session has no lock lease")
	}
	return sl.trust
}

// keys polls until the lock has n keys in etcd.
func (g *lateGrant) keys(t *testing.T, name string, n int64) {
	t.Helper()
	lockKeys(t, g.direct, name, n)
}

// grantAfter reproduces a sidecar that learns of its grant late: session a
// of the holder holds "gpu" and session b of the paused sidecar waits for
// it. Once etcd has answered b's lease's first keepalive, etcd's answers to
// the paused sidecar are held (its keepalives still reach etcd, so the
// lease stays alive there), its clock moves on by advance, a releases the
// lock, and the answers are let through: the paused sidecar learns that
// etcd granted b the lock advance after etcd last confirmed b's lease. It
// returns a's token and what b's Lock returned.
func (g *lateGrant) grantAfter(t *testing.T, a, b *coord.Session, advance time.Duration) (int64, result) {
	t.Helper()
	ctx := context.Background()
	first, err := g.holder.Lock(ctx, a, "gpu", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 1)
	go func() {
		tok, err := g.locks.Lock(ctx, b, "gpu", time.Hour)
		ch <- result{tok, err}
	}()
	g.keys(t, "gpu", 2)
	// Wait for the answer to the lease's first keepalive (sent at once,
	// as the lease is the first this client keeps alive): the next one
	// leaves trustTTL/3 after it, so none is in flight while the answers
	// are held below. Should the first answer have come before the trust
	// followed the lease, the second one does.
	trust := g.trust(t, b)
	deadline := time.Now().Add(trustTTL/3 + 10*time.Second)
	for trust.KeepaliveAnswers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no keepalive answer for b's lock lease")
		}
		time.Sleep(5 * time.Millisecond)
	}

	g.link.PauseRx()
	g.clock.Advance(advance)
	if err := g.holder.Unlock(ctx, a, "gpu"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Fatalf("b's Lock returned %v, %v while etcd's answers were held", r.token, r.err)
	default:
	}
	g.link.UnpauseRx()
	return first, receive(t, ch)
}

// TestLateGrantIsAnsweredLost reproduces the shape of chaos seed 567395:
// etcd grants a lock to a sidecar that does not hear from etcd for longer
// than the lease's trust window (two thirds of the TTL, on its clock). The
// sidecar must not answer the grant as held: the worker gets
// ErrLockLeaseLost (UNAVAILABLE on the socket), the sidecar holds nothing,
// the waiter's key is removed and the next session takes the lock with a
// higher token. The lease itself is still alive in etcd: the refusal is
// the trust window's, not etcd's.
func TestLateGrantIsAnsweredLost(t *testing.T) {
	g := newLateGrant(t)
	a, b, c := g.open(t, "a"), g.open(t, "b"), g.open(t, "c")
	window := coord.TrustWindow(trustTTL)
	first, r := g.grantAfter(t, a, b, window+time.Millisecond)
	if !errors.Is(r.err, ErrLockLeaseLost) || r.token != 0 {
		t.Fatalf("Lock granted %v after the last keepalive answer = %v, %v; want ErrLockLeaseLost", window+time.Millisecond, r.token, r.err)
	}
	if held := g.locks.HeldBy(b); len(held) != 0 {
		t.Errorf("the sidecar holds %v for b", held)
	}
	g.keys(t, "gpu", 0)
	g.locks.mu.Lock()
	id := g.locks.sessions[b].es.Lease()
	g.locks.mu.Unlock()
	ttl, err := g.direct.TimeToLive(context.Background(), id)
	if err != nil || ttl.TTL <= 0 {
		t.Errorf("b's lock lease in etcd: %v, %v; want it alive", ttl, err)
	}
	next, err := g.holder.TryLock(context.Background(), c, "gpu")
	if err != nil || next <= first {
		t.Fatalf("the next session's TryLock = %v, %v; want a token above %d", next, err, first)
	}
}

// TestGrantWithinTrustWindowIsHeld: a grant the sidecar learns of within
// the trust window after the last keepalive answer is answered held, with
// a token above the previous holder's.
func TestGrantWithinTrustWindowIsHeld(t *testing.T) {
	g := newLateGrant(t)
	a, b := g.open(t, "a"), g.open(t, "b")
	first, r := g.grantAfter(t, a, b, coord.TrustWindow(trustTTL))
	if r.err != nil || r.token <= first {
		t.Fatalf("Lock = %v, %v; want a token above %d", r.token, r.err, first)
	}
	if held := g.locks.HeldBy(b); len(held) != 1 || held[0].Token != r.token {
		t.Errorf("the sidecar holds %v for b; want gpu at %d", held, r.token)
	}
	g.keys(t, "gpu", 1)
}
