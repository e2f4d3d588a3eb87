package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Regression tests of the dispatch (scheduler, wait keys, give-back) on a
// real embedded etcd, each in its own namespace.

var (
	etcdOnce sync.Once
	etcdSrv  *embedetcd.Server
	etcdErr  error
)

// testEndpoint starts one embedded etcd for the package's tests.
func testEndpoint(t testing.TB) string {
	t.Helper()
	etcdOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		etcdSrv, etcdErr = embedetcd.Start(ctx, embedetcd.Config{})
	})
	if etcdErr != nil {
		t.Fatal(etcdErr)
	}
	return etcdSrv.Endpoint()
}

// privateEtcd starts an etcd of the test's own, for a test that compacts,
// defragments or measures the database (which would disturb the shared
// one), and a client of it in namespace ns; both stop when the test ends.
func privateEtcd(t testing.TB, ns string) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	return privateEtcdWith(t, ns, embedetcd.Config{})
}

// privateEtcdWith is privateEtcd with the etcd's config (for example its
// --max-txn-ops).
func privateEtcdWith(t testing.TB, ns string, cfg embedetcd.Config) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return srv, cli
}

// rig is one dispatcher with its etcd client, lease and store.
type rig struct {
	cli   *clientv3.Client
	store *Store
	d     *Dispatcher
	lease *coord.LeaseKeeper
}

// newRig starts a dispatcher in namespace ns. kv and watcher, when not
// nil, wrap the client's (to inject faults).
func newRig(t *testing.T, ns string, cfg Config, wrapKV func(clientv3.KV) clientv3.KV, wrapW func(clientv3.Watcher) clientv3.Watcher) *rig {
	t.Helper()
	return newRigWithLease(t, ns, cfg, wrapKV, wrapW, 5*time.Second)
}

// newRigWithLease is newRig with the sidecar lease's TTL and options (its
// clock).
func newRigWithLease(t *testing.T, ns string, cfg Config, wrapKV func(clientv3.KV) clientv3.KV, wrapW func(clientv3.Watcher) clientv3.Watcher, ttl time.Duration, opts ...coord.Option) *rig {
	t.Helper()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewStore(cli.KV, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lk := coord.NewLeaseKeeper(cli, ttl, nil, opts...)
	lctx, lcancel := context.WithCancel(context.Background())
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() { defer lwg.Done(); _ = lk.Run(lctx) }()
	kv, w := clientv3.KV(cli.KV), clientv3.Watcher(cli.Watcher)
	if wrapKV != nil {
		kv = wrapKV(kv)
	}
	if wrapW != nil {
		w = wrapW(w)
	}
	d := NewDispatcher(store, kv, w, lk, coord.NewSessions(), fmt.Sprintf("%s-%p", ns, cli), nil)
	d.Start()
	t.Cleanup(func() {
		d.Stop()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = lk.Revoke(rctx)
		cancel()
		lcancel()
		lwg.Wait()
		cli.Close()
	})
	return &rig{cli: cli, store: store, d: d, lease: lk}
}

// eventually polls cond every 20ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func submitSpecs(t *testing.T, s *Store, sps ...Spec) {
	t.Helper()
	for i := range sps {
		if sps[i].Payload == nil {
			sps[i].Payload = json.RawMessage(`{}`)
		}
	}
	if _, err := s.Submit(context.Background(), sps); err != nil {
		t.Fatal(err)
	}
}

func taskState(t *testing.T, cli *clientv3.Client, id string) Status {
	t.Helper()
	sts, _, err := readStatuses(context.Background(), cli, 1, []string{id}, 0)
	if err != nil || !sts[0].Found {
		t.Fatalf("state of %s: %v", id, err)
	}
	return sts[0].Status
}

// A backlog of one entry refills after it was handed out (it used to
// refill only below size/2, which is 0).
func TestWindowOfOneRefills(t *testing.T) {
	r := newRig(t, "w1", Config{Window: 1}, nil, nil)
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "tts"}, Spec{ID: "t2", Queue: "tts"}, Spec{ID: "t3", Queue: "tts"})
	for i := range 3 {
		c, err := r.d.Next(context.Background(), []string{"tts"}, 10*time.Second, nil)
		if err != nil || c == nil {
			t.Fatalf("Next %d: %v %v, with %d tasks pending", i, c, err, 3-i)
		}
		if err := r.d.Complete(context.Background(), c.Claim(), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// Entries that require labels this sidecar lacks, as many as the backlog
// holds, do not hide the task behind them (the scheduler reads past its
// horizon; a poll pages on).
func TestRequiredLabelsDoNotHideLaterTasks(t *testing.T) {
	r := newRig(t, "hol", Config{Window: 64}, nil, nil)
	var sps []Spec
	for i := range pollScan + 8 {
		sps = append(sps, Spec{ID: fmt.Sprintf("glm-%03d", i), Queue: "tts", Require: map[string]string{"model": "glm"}})
	}
	submitSpecs(t, r.store, append(sps, Spec{ID: "plain-1", Queue: "tts"}, Spec{ID: "plain-2", Queue: "tts"})...)
	c, err := r.d.Next(context.Background(), []string{"tts"}, 10*time.Second, nil)
	if err != nil || c == nil || c.ID != "plain-1" {
		t.Fatalf("scheduler path: %v %v, want plain-1", c, err)
	}
	c, err = r.d.Next(context.Background(), []string{"tts"}, 0, nil)
	if err != nil || c == nil || c.ID != "plain-2" {
		t.Fatalf("poll path: %v %v, want plain-2", c, err)
	}
}

// failingKV fails the Gets of claim keys while fail is set.
type failingKV struct {
	clientv3.KV
	mu     sync.Mutex
	fail   bool
	failed int // Gets failed
}

func (k *failingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.mu.Lock()
	f := k.fail && strings.HasPrefix(key, prefixClaim)
	if f {
		k.failed++
	}
	k.mu.Unlock()
	if f {
		return nil, fmt.Errorf("injected: etcd unreachable")
	}
	return k.KV.Get(ctx, key, opts...)
}

func (k *failingKV) heal() {
	k.mu.Lock()
	k.fail = false
	k.mu.Unlock()
}

// An assignment that reaches no Next call (here: a wait key left behind by
// a Next that went away) is given back, and the give-back is retried while
// etcd does not answer (it was tried once).
func TestGiveBackIsRetried(t *testing.T) {
	fk := &failingKV{fail: true}
	r := newRig(t, "gb", Config{}, func(kv clientv3.KV) clientv3.KV { fk.KV = kv; return fk }, nil)
	ctx := context.Background()
	ls, err := r.lease.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.putWait(ctx, waitKey(ls.Lease(), 1<<40), waitRecord{Queues: []string{"tts"}, Holder: "gone"}, ls.Lease()); err != nil {
		t.Fatal(err)
	}
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "tts", Timeout: time.Hour})
	eventually(t, 10*time.Second, "a give-back tried while etcd fails", func() bool {
		fk.mu.Lock()
		defer fk.mu.Unlock()
		return fk.failed > 0
	})
	if st := taskState(t, r.cli, "t1"); st.State != StateClaimed {
		t.Fatalf("t1 is %s, want CLAIMED by the forgotten wait key", st.State)
	}
	fk.heal()
	eventually(t, 10*time.Second, "t1 given back", func() bool {
		st := taskState(t, r.cli, "t1")
		return st.State == StatePending && st.Attempt == 0
	})
}

// stallingWatcher holds the events of the watches on prefix while stalled,
// and then ends them as a compaction would, so the watcher resyncs from a
// later revision and never sees what happened meanwhile.
type stallingWatcher struct {
	clientv3.Watcher
	prefix string
	mu     sync.Mutex
	stall  chan struct{} // closed to end the stall with a compaction
}

func (w *stallingWatcher) start() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stall = make(chan struct{})
	return w.stall
}

func (w *stallingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := w.Watcher.Watch(ctx, key, opts...)
	if !strings.HasPrefix(key, w.prefix) {
		return in
	}
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for {
			select {
			case resp, ok := <-in:
				if !ok {
					return
				}
				w.mu.Lock()
				stall := w.stall
				w.mu.Unlock()
				if stall == nil {
					select {
					case out <- resp:
					case <-ctx.Done():
						return
					}
					continue
				}
				// Swallow everything until the stall ends, then fail.
				select {
				case <-stall:
				case <-ctx.Done():
					return
				}
				w.mu.Lock()
				w.stall = nil
				w.mu.Unlock()
				select {
				case out <- clientv3.WatchResponse{Canceled: true, CompactRevision: resp.Header.Revision}:
				case <-ctx.Done():
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// A retry put in the delay index while the scheduler's watch was down is
// promoted when due: the scheduler does not rely on the watch's hint.
func TestDelayedTaskPromotedAfterResync(t *testing.T) {
	sw := &stallingWatcher{prefix: prefixQ}
	r := newRig(t, "dr", Config{SweepInterval: time.Second}, nil, func(w clientv3.Watcher) clientv3.Watcher { sw.Watcher = w; return sw })
	ctx := context.Background()
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "tts"})
	c, err := r.d.Next(ctx, []string{"tts"}, 10*time.Second, nil)
	if err != nil || c == nil {
		t.Fatalf("next: %v %v", c, err)
	}
	stall := sw.start()
	if _, _, err := r.d.Fail(ctx, c.Claim(), "boom", false, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	close(stall) // the failed watch restarts after the delay entry was put
	c, err = r.d.Next(ctx, []string{"tts"}, 15*time.Second, nil)
	if err != nil || c == nil || c.ID != "t1" {
		t.Fatalf("retry of t1 not handed out: %v %v (state %s)", c, err, taskState(t, r.cli, "t1").State)
	}
}

// An operator's cancel that overwrites a wait key before its sidecar saw
// the assignment (the sidecar's watch was down) still hands the task to
// the waiting Next, which learns of the cancel.
func TestCancelBeforeTheAssignmentWasSeen(t *testing.T) {
	sched := newRig(t, "cb", Config{}, nil, nil)
	eventually(t, 10*time.Second, "first rig elected", sched.d.Leading)
	sw := &stallingWatcher{prefix: prefixWait}
	wk := newRig(t, "cb", Config{}, nil, func(w clientv3.Watcher) clientv3.Watcher { sw.Watcher = w; return sw })
	ctx := context.Background()
	ls, err := wk.lease.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stall := sw.start()
	got := make(chan *Claimed, 1)
	go func() {
		c, err := wk.d.Next(ctx, []string{"tts"}, 20*time.Second, nil)
		if err != nil {
			t.Logf("next: %v", err)
		}
		got <- c
	}()
	eventually(t, 10*time.Second, "the wait key registered", func() bool {
		resp, err := sched.cli.Get(ctx, waitPrefix(ls.Lease()), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 1
	})
	submitSpecs(t, sched.store, Spec{ID: "t1", Queue: "tts"})
	eventually(t, 10*time.Second, "t1 assigned", func() bool { return taskState(t, sched.cli, "t1").State == StateClaimed })
	if res, err := sched.store.Cancel(ctx, "t1"); err != nil || !res.Requested {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	close(stall)
	c := <-got
	if c == nil || c.ID != "t1" || !c.Status.CancelRequested {
		t.Fatalf("waiting Next got %+v; want t1 with its cancel requested", c)
	}
}
