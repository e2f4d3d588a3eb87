package workqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
)

// breakableWatcher hands out watches of a real watcher; breakWatches
// closes it, which ends every watch it made as a lost connection would,
// and puts a new one in its place for the watches asked for after.
type breakableWatcher struct {
	clientv3.Watcher // the current one; guarded by mu
	cli              *clientv3.Client
	prefix           string
	mu               sync.Mutex
}

func newBreakableWatcher(cli *clientv3.Client, prefix string) *breakableWatcher {
	return &breakableWatcher{Watcher: namespace.NewWatcher(clientv3.NewWatcher(cli), prefix), cli: cli, prefix: prefix}
}

func (w *breakableWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.mu.Lock()
	cur := w.Watcher
	w.mu.Unlock()
	return cur.Watch(ctx, key, opts...)
}

func (w *breakableWatcher) breakWatches() {
	w.mu.Lock()
	old := w.Watcher
	w.Watcher = namespace.NewWatcher(clientv3.NewWatcher(w.cli), w.prefix)
	w.mu.Unlock()
	old.Close()
}

func (w *breakableWatcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Watcher.Close()
}

// The follower waits its retry on the clock, and only on it, after a
// failed read and after a watch that failed; then it reads again, watches
// from that read and delivers the changes with the status they came from.
// With stopOnReadError a failed read ends it at once.
func TestStatusFollowerRetriesOnTheClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := fmt.Sprintf("follower-retry-%d", time.Now().UnixNano()) // its own tasks under -count
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	bw := newBreakableWatcher(cli, ns+"/")
	defer bw.Close()
	clock := clockwork.NewFakeClock()
	var reads atomic.Int32
	readRevs := make(chan int64, 10)
	changes := make(chan statusChange, 100)
	f := statusFollower{w: bw, clock: clock, log: slog.New(slog.DiscardHandler), what: "test", specs: true, retry: time.Second,
		read: func(ctx context.Context) (int64, error) {
			if reads.Add(1) == 1 {
				return 0, errors.New("etcd is away")
			}
			resp, err := cli.Get(ctx, prefixState, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return 0, err
			}
			readRevs <- resp.Header.Revision
			return resp.Header.Revision, nil
		},
		apply: func(cs []statusChange) {
			for _, c := range cs {
				changes <- c
			}
		},
	}
	rctx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- f.run(rctx, 0) }()
	defer func() {
		stop()
		if err := <-runErr; !errors.Is(err, context.Canceled) {
			t.Errorf("run returned %v, want context.Canceled", err)
		}
	}()
	next := func(what string) statusChange {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-ctx.Done():
			t.Fatalf("%s: no change delivered", what)
			return statusChange{}
		}
	}
	readAgain := func(what string) {
		t.Helper()
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := clock.BlockUntilContext(bctx, 1); err != nil {
			t.Fatalf("%s: the follower does not wait on the clock: %v", what, err)
		}
		n := reads.Load()
		if len(readRevs) != 0 {
			t.Fatalf("%s: read again before its retry was due", what)
		}
		clock.Advance(999 * time.Millisecond)
		if err := clock.BlockUntilContext(bctx, 1); err != nil || reads.Load() != n {
			t.Fatalf("%s: read again %v before its retry of a second (%d reads, were %d)", what, err, reads.Load(), n)
		}
		clock.Advance(time.Millisecond)
		select {
		case <-readRevs:
		case <-ctx.Done():
			t.Fatalf("%s: no read after the retry was due", what)
		}
	}

	readAgain("after the failed first read")
	submitSpecs(t, s, Spec{ID: "a", Queue: "q", Batch: "b"})
	if c := next("a submitted"); c.ID != "a" || c.Prev != nil || c.Cur == nil || c.Cur.State != StatePending || c.Cur.Batch != "b" {
		t.Fatalf("a submitted: %+v", c)
	}
	if _, err := s.Cancel(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if c := next("a cancelled"); c.ID != "a" || c.Prev == nil || c.Prev.State != StatePending || c.Cur == nil || c.Cur.State != StateCancelled {
		t.Fatalf("a cancelled: %+v, want PENDING → CANCELLED", c)
	}

	// The watch breaks; what happens before the next read is in that
	// read, what happens after it comes from the new watch.
	bw.breakWatches()
	submitSpecs(t, s, Spec{ID: "b", Queue: "q"})
	readAgain("after the watch broke")
	if _, err := s.Cancel(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if c := next("b cancelled"); c.ID != "b" || c.Prev == nil || c.Prev.State != StatePending || c.Cur == nil || c.Cur.State != StateCancelled {
		t.Fatalf("b cancelled: %+v, want PENDING → CANCELLED (b's submit was read, not watched)", c)
	}
	if len(changes) != 0 {
		t.Fatalf("unexpected change %+v", <-changes)
	}

	// A command's follower gives up on a failed read instead.
	failing := statusFollower{w: bw, clock: clock, log: slog.New(slog.DiscardHandler), what: "test", retry: time.Second, stopOnReadError: true,
		read:  func(context.Context) (int64, error) { return 0, errors.New("permission denied") },
		apply: func([]statusChange) {}}
	if err := failing.run(ctx, 0); err == nil || ctx.Err() != nil {
		t.Fatalf("run with a failing read and stopOnReadError: %v, want the read's error", err)
	}
}

// gatedWatcher holds back the watches asked for until open is closed,
// and says on asked when one is asked for.
type gatedWatcher struct {
	clientv3.Watcher
	asked chan struct{}
	open  chan struct{}
}

func (w *gatedWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	select {
	case w.asked <- struct{}{}:
	default:
	}
	select {
	case <-w.open:
	case <-ctx.Done():
		ch := make(chan clientv3.WatchResponse)
		close(ch)
		return ch
	}
	return w.Watcher.Watch(ctx, key, opts...)
}

// Changes made between the tally's read and the start of its watch, then
// compacted away, are not lost: the watch fails as compacted, the tally
// reads again at once (its clock never moves) and ends with the right
// counts, and it follows live changes after that.
func TestTallyCompactedBetweenReadAndWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, cli := privateEtcd(t, "tally-compact")
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	submitSpecs(t, s, Spec{ID: "a", Queue: "q", Batch: "b"}, Spec{ID: "b", Queue: "q", Batch: "b"},
		Spec{ID: "c", Queue: "q", Batch: "b"}, Spec{ID: "d", Queue: "q", Batch: "b"}, Spec{ID: "e", Queue: "q", Batch: "b"})
	if _, err := s.Cancel(ctx, "a"); err != nil {
		t.Fatal(err)
	}

	gw := &gatedWatcher{Watcher: cli.Watcher, asked: make(chan struct{}, 1), open: make(chan struct{})}
	tl := NewTally(cli.KV, gw)
	tl.Clock = clockwork.NewFakeClock()
	var loads atomic.Int32
	tl.OnChange = func(_, _, id string) {
		if id == "" {
			loads.Add(1)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); tl.Run(rctx) }()
	defer func() { stop(); wg.Wait() }()
	select {
	case <-gw.asked:
	case <-ctx.Done():
		t.Fatal("the tally never asked for its watch")
	}
	if c, _ := tl.Batch("b"); c != (Counts{Total: 5, Pending: 4, Cancelled: 1}) || loads.Load() != 1 {
		t.Fatalf("after the first read: %+v, %d reads", c, loads.Load())
	}

	// While the watch is held back: two cancels, two new tasks, and a
	// removal after retention; then a compaction past all of them.
	for _, id := range []string{"b", "c"} {
		if _, err := s.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	submitSpecs(t, s, Spec{ID: "f", Queue: "q", Batch: "b"}, Spec{ID: "g", Queue: "q2", Batch: "b"})
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete(stateKey("a")), clientv3.OpDelete(taskKey("a"))).Commit(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	close(gw.open)

	want := Counts{Total: 6, Pending: 4, Cancelled: 2}
	eventually(t, 20*time.Second, "counts read again after the compaction", func() bool {
		c, _ := tl.Batch("b")
		return c == want && loads.Load() == 2
	})
	if q := tl.Queues(); q["q"] != (Counts{Total: 5, Pending: 3, Cancelled: 2}) || q["q2"] != (Counts{Total: 1, Pending: 1}) {
		t.Fatalf("queues after the second read: %+v", q)
	}
	if _, err := s.Cancel(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	want = Counts{Total: 6, Pending: 3, Cancelled: 3}
	eventually(t, 20*time.Second, "a live change after the second read", func() bool { c, _ := tl.Batch("b"); return c == want })
	if n := loads.Load(); n != 2 {
		t.Fatalf("%d reads, want 2 (the first, and one after the compaction)", n)
	}
}
