package registry

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/internal/etcdtest"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Unit tests of the registrar on a fake clock against a real etcd.

// failures is a slog handler counting failed registrations.
type failures struct{ n atomic.Int64 }

func (h *failures) Enabled(context.Context, slog.Level) bool { return true }
func (h *failures) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "registering the sidecar failed") {
		h.n.Add(1)
	}
	return nil
}
func (h *failures) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *failures) WithGroup(string) slog.Handler      { return h }

// pending reports whether at least n timers wait on the clock, without
// blocking.
func pending(c *clockwork.FakeClock, n int) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return c.BlockUntilContext(ctx, n) == nil
}

// keeper runs a lease keeper until the test ends.
func keeper(t *testing.T, cli *clientv3.Client) *coord.LeaseKeeper {
	k := coord.NewLeaseKeeper(cli, 5*time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	t.Cleanup(func() {
		_ = k.Revoke(context.Background())
		cancel()
		<-done
	})
	return k
}

// run runs the registrar until the test ends.
func run(t *testing.T, r *Registrar) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// entry polls until List shows the worker under a lease other than not.
func entry(t *testing.T, cli *clientv3.Client, id string, not int64) Entry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es, err := List(context.Background(), cli.KV)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.WorkerID == id && e.Lease != not {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no entry for %s (other than under lease %x): %v", id, not, es)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEntryFollowsTheLease: the entry is written under the lease, stamped
// with the clock's time, and written again under a new lease when the old
// one is lost.
func TestEntryFollowsTheLease(t *testing.T) {
	cli := etcdtest.Client(t)
	at := time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(at)
	k := keeper(t, cli)
	run(t, New(cli.KV, k, Config{Entry: Entry{WorkerID: "w1", Host: "h", Queues: []string{"tts"}}, Clock: clock}))
	e := entry(t, cli, "w1", 0)
	s, _, err := k.Session()
	if err != nil || e.Lease != int64(s.Lease()) || e.UpdatedMS != at.UnixMilli() || e.Host != "h" {
		t.Fatalf("entry %+v, lease %v (%v)", e, s, err)
	}
	clock.Advance(time.Minute)
	if _, err := cli.Revoke(context.Background(), s.Lease()); err != nil {
		t.Fatal(err)
	}
	e2 := entry(t, cli, "w1", e.Lease)
	if e2.UpdatedMS != at.Add(time.Minute).UnixMilli() {
		t.Errorf("rewritten entry stamped %d, want the clock's %d", e2.UpdatedMS, at.Add(time.Minute).UnixMilli())
	}
}

// TestFailedWriteIsRetriedEveryInterval: a write etcd refuses (here an
// entry over etcd's request size, refused every time) is tried again
// RetryInterval later on the clock, not before.
func TestFailedWriteIsRetriedEveryInterval(t *testing.T) {
	cli := etcdtest.Client(t)
	clock := clockwork.NewFakeClock()
	k := keeper(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.WaitSession(ctx); err != nil {
		t.Fatal(err)
	}
	log := &failures{}
	big := Entry{WorkerID: "w1", Labels: map[string]string{"x": strings.Repeat("x", 1600<<10)}}
	run(t, New(cli.KV, k, Config{Entry: big, Logger: slog.New(log), Clock: clock}))
	for i := int64(1); i <= 3; i++ {
		for log.n.Load() < i {
			if ctx.Err() != nil {
				t.Fatalf("%d failed writes, want %d", log.n.Load(), i)
			}
			time.Sleep(time.Millisecond)
		}
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal("the registrar does not wait on the clock after a failure")
		}
		clock.Advance(RetryInterval - time.Millisecond)
		if !pending(clock, 1) || log.n.Load() != i {
			t.Fatalf("write %d came before RetryInterval", i+1)
		}
		clock.Advance(time.Millisecond)
	}
}

// sessionsIn polls until List shows worker id with the named processes'
// sessions, in that order.
func sessionsIn(t *testing.T, cli *clientv3.Client, id string, want ...string) Entry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e := entry(t, cli, id, 0)
		var got []string
		for _, s := range e.Sessions {
			got = append(got, s.Process)
		}
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions of %s: %v, want %v", id, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEntryListsSessions: the entry lists the open sessions with their
// process names and pids, oldest first, and is written again when one
// opens or closes, at most once per SessionsInterval on the clock.
func TestEntryListsSessions(t *testing.T) {
	cli := etcdtest.Client(t)
	at := time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(at)
	sessions := coord.NewSessions(coord.WithClock(clock))
	a := sessions.OpenFor("synth-a", 11)
	k := keeper(t, cli)
	run(t, New(cli.KV, k, Config{Entry: Entry{WorkerID: "w1"}, Sessions: sessions, Clock: clock}))
	e := sessionsIn(t, cli, "w1", "synth-a")
	if s := e.Sessions[0]; s.Session != a.ID || s.PID != 11 || s.SinceMS != at.UnixMilli() {
		t.Fatalf("session %+v, want %s of pid 11 since %d", s, a.ID, at.UnixMilli())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock.Advance(time.Millisecond) // b opens after a
	sessions.OpenFor("synth-b", 12)
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the change does not wait for SessionsInterval on the clock")
	}
	if e := entry(t, cli, "w1", 0); len(e.Sessions) != 1 {
		t.Fatalf("written within SessionsInterval: %+v", e.Sessions)
	}
	clock.Advance(SessionsInterval)
	sessionsIn(t, cli, "w1", "synth-a", "synth-b")

	sessions.Close(a)
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the close does not wait for SessionsInterval on the clock")
	}
	clock.Advance(SessionsInterval)
	sessionsIn(t, cli, "w1", "synth-b")
}
