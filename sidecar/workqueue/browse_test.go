package workqueue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tally moves each task between counts as its status changes, forgets
// a task whose status is removed, and a tally started later reads the same
// counts.
func TestTallyFollowsTransitions(t *testing.T) {
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: "tally"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	run := func() *Tally {
		tl := NewTally(cli.KV, cli.Watcher)
		wg.Add(1)
		go func() { defer wg.Done(); tl.Run(ctx) }()
		return tl
	}
	first := run()
	eventually(t, 10*time.Second, "first read", first.Ready)

	submitSpecs(t, s, Spec{ID: "a", Queue: "q", Batch: "b"}, Spec{ID: "b", Queue: "q", Batch: "b"},
		Spec{ID: "c", Queue: "q", Batch: "b", NotBefore: time.Now().Add(time.Hour)}, Spec{ID: "d", Queue: "q2"})
	if _, err := s.Cancel(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	want := Counts{Total: 3, Pending: 1, Delayed: 1, Cancelled: 1}
	eventually(t, 10*time.Second, "counts after submit and cancel", func() bool { c, _ := first.Batch("b"); return c == want })
	if q := first.Queues(); q["q"] != want || q["q2"] != (Counts{Total: 1, Pending: 1}) {
		t.Fatalf("queues %+v", q)
	}
	later := run()
	eventually(t, 10*time.Second, "a later tally's first read", func() bool { c, _ := later.Batch("b"); return c == want })

	// Retention removes a finished task's status and spec.
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete(stateKey("b")), clientv3.OpDelete(taskKey("b"))).Commit(); err != nil {
		t.Fatal(err)
	}
	want = Counts{Total: 2, Pending: 1, Delayed: 1}
	for _, tl := range []*Tally{first, later} {
		eventually(t, 10*time.Second, "counts after removal", func() bool { c, _ := tl.Batch("b"); return c == want })
	}
}

// The oldest pending task is found across priority levels: the head of
// the ready index is the highest priority, not the oldest.
func TestOldestPendingAcrossPriorities(t *testing.T) {
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: "oldest"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	clock := clockwork.NewFakeClockAt(time.UnixMilli(1_700_000_000_000))
	s, err := NewStore(cli.KV, Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := s.OldestPending(ctx, "q", 0); err != nil || got != 0 {
		t.Fatalf("empty queue: %d %v", got, err)
	}
	submitSpecs(t, s, Spec{ID: "old", Queue: "q"})
	oldMS := clock.Now().UnixMilli()
	clock.Advance(time.Hour)
	now := clock.Now()
	submitSpecs(t, s, Spec{ID: "urgent", Queue: "q", Priority: 10}, Spec{ID: "low", Queue: "q", Priority: -5})
	if got, err := s.OldestPending(ctx, "q", 0); err != nil || got != oldMS {
		t.Fatalf("oldest pending %d (%v), want %d", got, err, oldMS)
	}
	// Bounded: reading only the first level sees the newer urgent task.
	if got, _ := s.OldestPending(ctx, "q", 1); got != now.UnixMilli() {
		t.Fatalf("one level: %d, want %d", got, now.UnixMilli())
	}
}
