package workqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/jonboulle/clockwork"
)

// trustTTL is the sidecar lease's TTL in the trust window tests: etcd's
// client sends keepalives every third of it (100s of real time), so after
// the first answer none comes during a test, and the lease never expires in
// etcd during one.
const trustTTL = 5 * time.Minute

// trustRig is a dispatcher (scheduler and waiter at once) whose lease keeper
// runs on a fake clock. It returns once the dispatcher leads and etcd has
// answered the lease's first keepalive.
func trustRig(t *testing.T, ns string) (*rig, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClock()
	r := newRigWithLease(t, ns, Config{}, nil, nil, trustTTL, coord.WithClock(clock))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := r.lease.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := r.lease.Trust(ls.Lease())
	if tr == nil {
		t.Fatal("the keeper's current lease has no trust window")
	}
	eventually(t, 30*time.Second, "first keepalive answer", func() bool { return tr.KeepaliveAnswers() > 0 })
	eventually(t, 30*time.Second, "scheduler elected", r.d.Leading)
	return r, clock
}

// TestClaimPastTrustWindowIsGivenBack: a sidecar that learns of a claim
// made for its worker when etcd last confirmed its lease longer ago than
// the trust window (it may have been paused past the TTL, and the task
// handed to another worker since) does not hand it out: Next answers
// coord.ErrNoLease (UNAVAILABLE on the socket), and the claim goes back to
// the queue without using an attempt. Both ways of claiming: assigned by
// the scheduler (Next with a wait) and claimed by Next itself (wait 0).
func TestClaimPastTrustWindowIsGivenBack(t *testing.T) {
	r, clock := trustRig(t, "trust-late")
	clock.Advance(coord.TrustWindow(trustTTL) + time.Millisecond)

	type answer struct {
		c   *Claimed
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		c, err := r.d.Next(context.Background(), []string{"q"}, 30*time.Second, nil)
		ch <- answer{c, err}
	}()
	eventually(t, 10*time.Second, "Next waiting", func() bool {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return len(r.d.waits) == 1
	})
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "q"})
	var a answer
	select {
	case a = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("Next did not return")
	}
	if a.c != nil || !errors.Is(a.err, coord.ErrNoLease) {
		t.Fatalf("Next = %+v, %v; want coord.ErrNoLease", a.c, a.err)
	}
	pendingAgain := func() bool {
		st := taskState(t, r.cli, "t1")
		return st.State == StatePending && st.Attempt == 0
	}
	eventually(t, 10*time.Second, "t1 PENDING at attempt 0 after the give-back", pendingAgain)

	c, err := r.d.Next(context.Background(), []string{"q"}, 0, nil)
	if c != nil || !errors.Is(err, coord.ErrNoLease) {
		t.Fatalf("Next with wait 0 = %+v, %v; want coord.ErrNoLease", c, err)
	}
	eventually(t, 10*time.Second, "t1 PENDING at attempt 0 after the poll's give-back", pendingAgain)
	if got := r.d.Stats().Claims; got != 0 {
		t.Errorf("%d claims handed out, want none", got)
	}
}

// TestClaimWithinTrustWindowIsHandedOut: at the end of the trust window
// after etcd last confirmed the lease, a claim is still handed out.
func TestClaimWithinTrustWindowIsHandedOut(t *testing.T) {
	r, clock := trustRig(t, "trust-in-time")
	clock.Advance(coord.TrustWindow(trustTTL))
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "q"}, Spec{ID: "t2", Queue: "q"})
	c, err := r.d.Next(context.Background(), []string{"q"}, 10*time.Second, nil)
	if err != nil || c == nil || c.ID != "t1" {
		t.Fatalf("Next = %+v, %v; want t1", c, err)
	}
	c, err = r.d.Next(context.Background(), []string{"q"}, 0, nil)
	if err != nil || c == nil || c.ID != "t2" {
		t.Fatalf("Next with wait 0 = %+v, %v; want t2", c, err)
	}
}
