package namedlock

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/internal/etcdtest"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Unit tests of the lock rules on a fake clock against a real etcd: the
// waits are decided by the clock, so no test sleeps or waits for one.

// waited is one Observer.LockWaited call.
type waited struct {
	outcome Outcome
	d       time.Duration
}

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu  sync.Mutex
	got []waited
}

func (r *recorder) LockWaited(o Outcome, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, waited{o, d})
}

func (r *recorder) calls() []waited {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

type fixture struct {
	cli      *clientv3.Client
	clock    *clockwork.FakeClock
	obs      *recorder
	spans    *tracetest.SpanRecorder
	locks    *Locks
	sessions *coord.Sessions
}

// newFixture's lock leases live 60s: the clock's jumps in these tests (up
// to 30s before a lock is granted) stay inside the trust window (40s), so
// a grant is answered without waiting for a keepalive answer at the new
// time; trust_test.go tests the window.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{cli: etcdtest.Client(t), clock: clockwork.NewFakeClock(), obs: &recorder{}, spans: tracetest.NewSpanRecorder(), sessions: coord.NewSessions()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	f.locks = New(f.cli, Config{TTL: 60 * time.Second, WorkerID: "w1", Clock: f.clock, Observer: f.obs, TracerProvider: tp})
	t.Cleanup(func() {
		f.locks.Close()
		_ = tp.Shutdown(context.Background())
	})
	return f
}

// open opens a session, closed when the test ends.
func (f *fixture) open(t *testing.T, process string) *coord.Session {
	s := f.sessions.Open(process)
	t.Cleanup(func() { f.sessions.Close(s) })
	return s
}

// waiters polls until the lock has n keys (holder and waiters) in etcd.
func (f *fixture) waiters(t *testing.T, name string, n int64) {
	t.Helper()
	lockKeys(t, f.cli, name, n)
}

// lockKeys polls until lock name has n keys (holder and waiters) in etcd.
func lockKeys(t *testing.T, kv clientv3.KV, name string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := kv.Get(context.Background(), PrefixLocks+name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %s has %d keys, want %d", name, resp.Count, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type result struct {
	token int64
	err   error
}

// lockAsync runs Lock in a goroutine the test waits for.
func (f *fixture) lockAsync(t *testing.T, s *coord.Session, name string, wait time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		tok, err := f.locks.Lock(context.Background(), s, name, wait)
		ch <- result{tok, err}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Lock did not return")
		return result{}
	}
}

// blocked fails the test if Lock already returned or its deadline timer
// has fired (the fake clock fires timers within Advance, so a timer that
// fired is no longer pending when Advance returns).
func (f *fixture) blocked(t *testing.T, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: Lock returned %v, %v; want it still waiting", what, r.token, r.err)
	default:
	}
	if !pending(f.clock, 1) {
		t.Fatalf("%s: the wait's timer has fired", what)
	}
}

// pending reports whether at least n timers wait on the clock, without
// blocking.
func pending(c *clockwork.FakeClock, n int) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return c.BlockUntilContext(ctx, n) == nil
}

// TestLockWaitEndsOnTheClock: a Lock's wait ends when its wait has passed
// on the clock, not before: a *TimeoutError, the waiter's key removed,
// the holder untouched, the outcome "timeout" measured as exactly the
// wait.
func TestLockWaitEndsOnTheClock(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	if _, err := f.locks.Lock(context.Background(), a, "gpu", time.Minute); err != nil {
		t.Fatal(err)
	}
	ch := f.lockAsync(t, b, "gpu", 30*time.Second)
	f.waiters(t, "gpu", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.clock.BlockUntilContext(ctx, 1); err != nil { // b's deadline
		t.Fatal(err)
	}
	f.clock.Advance(30*time.Second - time.Millisecond)
	f.blocked(t, ch, "1ms before the wait ends")
	f.clock.Advance(time.Millisecond)
	r := receive(t, ch)
	var te *TimeoutError
	if !errors.As(r.err, &te) || te.Wait != 30*time.Second || te.Name != "gpu" {
		t.Fatalf("Lock = %v, %v; want a TimeoutError of 30s", r.token, r.err)
	}
	if r.err.Error() != `lock "gpu" not obtained within 30s` {
		t.Errorf("message %q", r.err)
	}
	f.waiters(t, "gpu", 1)
	if held := f.locks.HeldBy(a); len(held) != 1 {
		t.Errorf("holder lost the lock: %v", held)
	}
	if got := f.obs.calls(); len(got) != 2 || got[0].outcome != OutcomeAcquired || got[1] != (waited{OutcomeTimeout, 30 * time.Second}) {
		t.Errorf("observed %v; want acquired, then timeout after 30s", got)
	}
}

// TestLockWaitEndsWhenFree: a waiter whose wait has not passed gets the
// lock when it is released, with a higher fencing token; the wait is
// measured on the clock.
func TestLockWaitEndsWhenFree(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	first, err := f.locks.Lock(context.Background(), a, "gpu", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := f.lockAsync(t, b, "gpu", 30*time.Second)
	f.waiters(t, "gpu", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(29 * time.Second)
	f.blocked(t, ch, "1s before the wait ends")
	if err := f.locks.Unlock(context.Background(), a, "gpu"); err != nil {
		t.Fatal(err)
	}
	r := receive(t, ch)
	if r.err != nil || r.token <= first {
		t.Fatalf("Lock = %v, %v; want a token above %d", r.token, r.err, first)
	}
	if got := f.obs.calls(); len(got) != 2 || got[1] != (waited{OutcomeAcquired, 29 * time.Second}) {
		t.Errorf("observed %v; want the second acquired after 29s", got)
	}
}

// TestLongWaitIsCutToMaxWait: a wait over MaxWait ends at MaxWait.
func TestLongWaitIsCutToMaxWait(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	if _, err := f.locks.Lock(context.Background(), a, "gpu", 0); err != nil {
		t.Fatal(err)
	}
	ch := f.lockAsync(t, b, "gpu", time.Hour)
	f.waiters(t, "gpu", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(MaxWait)
	var te *TimeoutError
	if r := receive(t, ch); !errors.As(r.err, &te) || te.Wait != MaxWait {
		t.Fatalf("Lock = %v, %v; want a TimeoutError of %v", r.token, r.err, MaxWait)
	}
}

// TestWaitZeroTries: Lock with wait 0 on a held lock answers at once with
// a TimeoutError of 0s (outcome busy) and leaves no key in the line;
// TryLock answers ErrLocked.
func TestWaitZeroTries(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	if _, err := f.locks.Lock(context.Background(), a, "gpu", 0); err != nil {
		t.Fatal(err)
	}
	_, err := f.locks.Lock(context.Background(), b, "gpu", 0)
	var te *TimeoutError
	if !errors.As(err, &te) || te.Wait != 0 || err.Error() != `lock "gpu" is held by another session (wait 0s)` {
		t.Fatalf("Lock with wait 0 = %v", err)
	}
	if _, err := f.locks.TryLock(context.Background(), b, "gpu"); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock = %v, want ErrLocked", err)
	}
	f.waiters(t, "gpu", 1)
	got := f.obs.calls()
	if len(got) != 3 || got[1] != (waited{OutcomeBusy, 0}) || got[2] != (waited{OutcomeBusy, 0}) {
		t.Errorf("observed %v; want acquired, busy, busy (no time passed on the clock)", got)
	}
}

// TestLockTakenForACallerThatLeftIsGivenBack: when the caller's context
// ended as the lock was taken, the lock is released (the next session
// can take it) and the caller's error returned, outcome cancelled.
func TestLockTakenForACallerThatLeftIsGivenBack(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	token, err := f.locks.acquire(context.Background(), a, "gpu", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	left, cancel := context.WithCancel(context.Background())
	cancel()
	tok, err := f.locks.settle(left, a, "gpu", token, nil)
	if tok != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("settle = %v, %v; want 0, context.Canceled", tok, err)
	}
	if o := outcomeOf(left, false, err); o != OutcomeCancelled {
		t.Errorf("outcome %q, want cancelled", o)
	}
	if held := f.locks.HeldBy(a); len(held) != 0 {
		t.Errorf("still held: %v", held)
	}
	f.waiters(t, "gpu", 0)
	if _, err := f.locks.TryLock(context.Background(), b, "gpu"); err != nil {
		t.Fatalf("the next session cannot take the lock: %v", err)
	}
	// A caller that is still there keeps its lock.
	c := f.open(t, "c")
	token, err = f.locks.acquire(context.Background(), c, "other", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := f.locks.settle(context.Background(), c, "other", token, nil); tok != token || err != nil {
		t.Fatalf("settle of a live caller = %v, %v", tok, err)
	}
}

// TestLockSpan: each Lock is a baton.lock.wait span with the lock's name,
// the session, the outcome and the fencing token; a wait that ended
// without the lock is an error span.
func TestLockSpan(t *testing.T) {
	f := newFixture(t)
	a, b := f.open(t, "a"), f.open(t, "b")
	token, err := f.locks.Lock(context.Background(), a, "gpu-0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.locks.Lock(context.Background(), b, "gpu-0", 0); err == nil {
		t.Fatal("second Lock succeeded")
	}
	spans := f.spans.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	attrs := map[string]string{}
	for _, kv := range spans[0].Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	want := map[string]string{"baton.lock.name": "gpu-0", "baton.lock.session": a.ID, "baton.lock.outcome": "acquired", "baton.task.fencing_token": strconv.FormatInt(token, 10)}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("span %s attribute %s = %q, want %q", spans[0].Name(), k, attrs[k], v)
		}
	}
	if spans[0].Name() != SpanLockWait {
		t.Errorf("span name %q", spans[0].Name())
	}
	if spans[1].Status().Code.String() != "Error" || len(spans[1].Events()) != 1 {
		t.Errorf("refused wait: status %v events %v", spans[1].Status(), spans[1].Events())
	}
}
