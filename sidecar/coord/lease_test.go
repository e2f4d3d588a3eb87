package coord

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/internal/etcdtest"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Unit tests of the lease keeper and the sessions on a fake clock against
// a real etcd: the keeper's own timing decisions (when to try again) are
// checked by advancing the clock, never by sleeping.

// retries is a slog handler that keeps the retry_in of each "granting
// etcd lease failed" record.
type retries struct {
	mu  sync.Mutex
	got []time.Duration
}

func (h *retries) Enabled(context.Context, slog.Level) bool { return true }
func (h *retries) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			h.mu.Lock()
			h.got = append(h.got, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}
func (h *retries) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *retries) WithGroup(string) slog.Handler      { return h }

func (h *retries) list() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// pending reports whether at least n timers wait on the clock, without
// blocking.
func pending(c *clockwork.FakeClock, n int) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return c.BlockUntilContext(ctx, n) == nil
}

// failures polls until the keeper has failed n grants and waits on the
// clock.
func failures(t *testing.T, k *LeaseKeeper, c *clockwork.FakeClock, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k.Stats().GrantFailures < n {
		if ctx.Err() != nil {
			t.Fatalf("%d grant failures, want %d", k.Stats().GrantFailures, n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the keeper does not wait on the clock after a failure")
	}
	if got := k.Stats().GrantFailures; got != n {
		t.Fatalf("%d grant failures, want %d: it tried again without the clock", got, n)
	}
}

// TestLeaseGrantBacksOff: while etcd refuses the grant (here: a TTL over
// etcd's maximum, refused on every try), the keeper tries again 100ms
// after the first failure, twice as long after each further one, and at
// most every 5s; not one try comes before its time.
func TestLeaseGrantBacksOff(t *testing.T) {
	cli := etcdtest.Client(t)
	clock := clockwork.NewFakeClock()
	log := &retries{}
	k := NewLeaseKeeper(cli, 9_000_000_001*time.Second, slog.New(log), WithClock(clock))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i, d := range want {
		failures(t, k, clock, int64(i+1))
		clock.Advance(d - time.Millisecond)
		if !pending(clock, 1) {
			t.Fatalf("try %d came before its %v", i+2, d)
		}
		clock.Advance(time.Millisecond)
	}
	failures(t, k, clock, int64(len(want)+1))
	if got := log.list(); !slices.Equal(got[:len(want)], want) {
		t.Errorf("logged retry_in %v, want %v", got, want)
	}
	if s := k.Stats(); s.Granted != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestLostLeaseIsReplacedAtOnce: a lease revoked behind the keeper's back
// is reported on the old session and replaced without waiting on the
// clock (the backoff is only for grants that fail).
func TestLostLeaseIsReplacedAtOnce(t *testing.T) {
	cli := etcdtest.Client(t)
	clock := clockwork.NewFakeClock()
	k, wctx := runKeeper(t, cli, time.Second, clock)
	first, err := k.WaitSession(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(wctx, first.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.Done():
	case <-wctx.Done():
		t.Fatal("the revoked lease's session did not end")
	}
	for {
		s, changed, err := k.Session()
		if err == nil && s.Lease() != first.Lease() {
			break
		}
		select {
		case <-changed:
		case <-wctx.Done():
			t.Fatal("no new lease without advancing the clock")
		}
	}
	if s := k.Stats(); s.Granted != 2 || s.Lost != 1 || s.GrantFailures != 0 {
		t.Errorf("stats %+v, want 2 granted, 1 lost", s)
	}
}

// TestSessionsStartOnTheClock: a session's start time is the clock's,
// and OfPID lists a process's sessions oldest first by it.
func TestSessionsStartOnTheClock(t *testing.T) {
	start := time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(start)
	r := NewSessions(WithClock(clock))
	var opened []*Session
	for i := range 3 {
		opened = append(opened, r.OpenFor("w", 42))
		if opened[i].Started != start.Add(time.Duration(i)*time.Second) {
			t.Errorf("session %d started %v", i, opened[i].Started)
		}
		clock.Advance(time.Second)
	}
	r.OpenFor("other", 7)
	if got := r.OfPID(42); !slices.Equal(got, opened) {
		t.Errorf("OfPID = %v, want the three in order", got)
	}
	r.Close(opened[0])
	if got := r.OfPID(42); !slices.Equal(got, opened[1:]) || r.Len() != 3 || r.Opened() != 4 {
		t.Errorf("after Close: OfPID %v, Len %d, Opened %d", got, r.Len(), r.Opened())
	}
}

// TestSessionsListAndChange: List gives the open sessions oldest first and
// a channel closed by the next Open or Close, not by closing a session
// twice.
func TestSessionsListAndChange(t *testing.T) {
	clock := clockwork.NewFakeClock()
	r := NewSessions(WithClock(clock))
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	ss, changed := r.List()
	if len(ss) != 0 || closed(changed) {
		t.Fatalf("empty: %v, changed %v", ss, closed(changed))
	}
	a := r.OpenFor("a", 1)
	if !closed(changed) {
		t.Fatal("Open did not signal a change")
	}
	clock.Advance(time.Second)
	b := r.Open("b")
	ss, changed = r.List()
	if !slices.Equal(ss, []*Session{a, b}) || b.Process != "b" || closed(changed) {
		t.Fatalf("List = %v, want a then b", ss)
	}
	r.Close(a)
	if !closed(changed) {
		t.Fatal("Close did not signal a change")
	}
	ss, changed = r.List()
	r.Close(a)
	if !slices.Equal(ss, []*Session{b}) || closed(changed) {
		t.Fatalf("after closing a twice: List = %v, changed %v", ss, closed(changed))
	}
}

// TestLeaseKeeperTrust: the keeper's current lease has a trust window that
// etcd's keepalive answers renew on the keeper's clock; another lease has
// none. Past the window without an answer the lease is not trusted; the
// next answer trusts it again.
func TestLeaseKeeperTrust(t *testing.T) {
	cli := etcdtest.Client(t)
	clock := clockwork.NewFakeClock()
	k, wctx := runKeeper(t, cli, 3*time.Second, clock)
	s, err := k.WaitSession(wctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := k.Trust(s.Lease())
	if tr == nil || !tr.Trusted() || tr.Window() != TrustWindow(3*time.Second) {
		t.Fatalf("trust of the new lease: %+v", tr)
	}
	if k.Trust(s.Lease()+1) != nil {
		t.Fatal("a lease that is not the keeper's has a trust window")
	}
	clock.Advance(tr.Window() + time.Millisecond)
	if tr.Trusted() && tr.LastConfirmed().Before(clock.Now()) {
		t.Fatal("trusted past the window")
	}
	// Keepalives go every second (TTL/3) in real time.
	for !tr.Trusted() {
		if wctx.Err() != nil {
			t.Fatal("no keepalive answer renewed the trust window")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !tr.LastConfirmed().Equal(clock.Now()) {
		t.Fatalf("confirmed at %v, want the clock's %v", tr.LastConfirmed(), clock.Now())
	}
}

// runKeeper runs a lease keeper of ttl on clock until the test ends, and
// returns it with a context for the test's waits (10s).
func runKeeper(t *testing.T, cli *clientv3.Client, ttl time.Duration, clock clockwork.Clock) (*LeaseKeeper, context.Context) {
	t.Helper()
	k := NewLeaseKeeper(cli, ttl, nil, WithClock(clock))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = k.Revoke(context.Background())
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(wcancel)
	return k, wctx
}
