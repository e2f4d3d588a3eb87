package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// nsStore returns a store on the package's etcd in namespace ns, and its
// client.
func nsStore(t *testing.T, ns string) (*Store, *clientv3.Client) {
	t.Helper()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s, cli
}

// hasState reports whether task id has a state/<id> key.
func hasState(t *testing.T, cli *clientv3.Client, id string) bool {
	t.Helper()
	resp, err := cli.Get(context.Background(), stateKey(id), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count == 1
}

// A task submitted ready has no state key, and every reader shows it as
// PENDING at attempt 0 with the settings it was submitted with: Get, List
// (all, by batch, by state), a batch's page and counts, the tally, the
// history, queue depth and the outstanding set of bounded feeding.
func TestNeverClaimedTaskReadsPendingEverywhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, cli := nsStore(t, "fresh")
	tl := NewTally(cli.KV, cli.Watcher)
	tctx, stopTally := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); tl.Run(tctx) }()
	defer func() { stopTally(); wg.Wait() }()
	eventually(t, 10*time.Second, "tally's first read", tl.Ready)

	submitSpecs(t, s,
		Spec{ID: "plain", Queue: "q", Batch: "b", Payload: json.RawMessage(`{"text":"hello"}`)},
		Spec{ID: "routed", Queue: "q", Batch: "b", Priority: 7, MaxAttempts: 5, Timeout: 2 * time.Second,
			Affinity: "spk_0001", Require: map[string]string{"model": "glm"}})
	for _, id := range []string{"plain", "routed"} {
		if hasState(t, cli, id) {
			t.Fatalf("%s has a state key before it was claimed", id)
		}
	}

	info, err := s.Get(ctx, "plain")
	if err != nil {
		t.Fatal(err)
	}
	st := info.Status
	if st.State != StatePending || st.Attempt != 0 || st.MaxAttempts != 3 || st.TimeoutMS != 300000 || st.Queue != "q" || st.Batch != "b" ||
		st.Index != readyKey("q", 0, st.Order, "plain") || st.UpdatedMS == 0 || string(info.Payload) != `{"text":"hello"}` || info.CreatedMS != st.Order/1e6 {
		t.Fatalf("Get(plain) = %+v", info)
	}
	ready, err := cli.Get(ctx, st.Index)
	if err != nil || len(ready.Kvs) != 1 || string(ready.Kvs[0].Value) != readyFormat+`{"b":"b"}` {
		t.Fatalf("plain's ready entry: %v %v; want it present with only its batch (the rest at the defaults)", ready, err)
	}
	info, err = s.Get(ctx, "routed")
	if err != nil {
		t.Fatal(err)
	}
	st = info.Status
	if st.State != StatePending || st.Attempt != 0 || st.Priority != 7 || st.MaxAttempts != 5 || st.TimeoutMS != 2000 ||
		st.Affinity != "spk_0001" || st.Require["model"] != "glm" || st.Batch != "b" {
		t.Fatalf("Get(routed).Status = %+v", st)
	}
	// The ready entry alone gives the scheduler the same status.
	ready, err = cli.Get(ctx, st.Index)
	if err != nil || len(ready.Kvs) != 1 {
		t.Fatalf("routed's ready entry: %v %v", ready, err)
	}
	if fromReady, err := decodeReady(st.Index, ready.Kvs[0].Value); err != nil || fromReady.encode() != st.encode() {
		t.Fatalf("ready entry decodes to %+v (%v), want %+v", fromReady, err, st)
	}

	for _, f := range []ListFilter{{}, {Batch: "b"}, {State: StatePending}, {Queue: "q"}} {
		got, more, err := s.List(ctx, f)
		if err != nil || more || len(got) != 2 {
			t.Fatalf("List(%+v) = %+v %v %v", f, got, more, err)
		}
		for _, ti := range got {
			if ti.Status.State != StatePending || ti.Status.Attempt != 0 {
				t.Fatalf("List(%+v): %s is %+v", f, ti.ID, ti.Status)
			}
		}
	}
	if got, _, err := s.List(ctx, ListFilter{State: StateClaimed}); err != nil || len(got) != 0 {
		t.Fatalf("List(CLAIMED) = %+v %v", got, err)
	}
	page, err := s.BatchPage(ctx, "b", "", "", 10, 0)
	if err != nil || len(page.Tasks) != 2 || page.Tasks[0].Status.State != StatePending || page.Tasks[1].Status.State != StatePending {
		t.Fatalf("BatchPage = %+v %v", page, err)
	}
	c, err := s.BatchWatch(ctx, cli.Watcher, "b", func(BatchCounts) bool { return false })
	if err != nil || c.Total != 2 || c.States[StatePending] != 2 {
		t.Fatalf("BatchWatch counts %+v %v", c, err)
	}
	eventually(t, 10*time.Second, "tally counts both pending", func() bool {
		c, _ := tl.Batch("b")
		return c == Counts{Total: 2, Pending: 2}
	})
	later := NewTally(cli.KV, cli.Watcher)
	if _, err := later.load(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := later.Batch("b"); c != (Counts{Total: 2, Pending: 2}) {
		t.Fatalf("a later tally's read: %+v", c)
	}
	hist, partial, err := s.TaskHistory(ctx, "plain", 10)
	if err != nil || partial || len(hist) != 1 || hist[0].Status.State != StatePending {
		t.Fatalf("TaskHistory = %+v %v %v", hist, partial, err)
	}
	qs, err := s.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0].Pending != 2 {
		t.Fatalf("Queues = %+v %v", qs, err)
	}
	if n, err := s.PendingCount(ctx); err != nil || n != 2 {
		t.Fatalf("PendingCount = %d %v", n, err)
	}
	o, err := s.StartOutstanding(ctx, cli.Watcher)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"plain", "routed", "never-submitted"}
	o.Add(ids)
	o.Created(ids)
	if err := o.Settle(ctx, ids); err != nil {
		t.Fatal(err)
	}
	if n := o.Len(); n != 2 {
		t.Fatalf("Outstanding after Settle: %d, want the 2 pending tasks", n)
	}

	// The first claim creates the state; every reader moves with it.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	head, err := cli.Get(ctx, readyPrefix("q"), clientv3.WithPrefix(), clientv3.WithLimit(1))
	if err != nil || len(head.Kvs) != 1 {
		t.Fatalf("head of q: %v %v", head, err)
	}
	hk := head.Kvs[0]
	if e, err := parseReadyKey(string(hk.Key)); err != nil || e.ID != "routed" {
		t.Fatalf("head of q: %s %v; want routed (priority 7)", hk.Key, err)
	}
	hst, err := decodeReady(string(hk.Key), hk.Value)
	if err != nil {
		t.Fatal(err)
	}
	h := Holder{Worker: "w", Lease: lease.ID}
	cl, err := s.claim(ctx, string(hk.Key), hk.ModRevision, hst, h, waitKey(lease.ID, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !hasState(t, cli, "routed") {
		t.Fatal("the first claim wrote no state")
	}
	info, err = s.Get(ctx, "routed")
	if err != nil || info.Status.State != StateClaimed || info.Status.Attempt != 1 || info.Token != cl.Token || info.Status.MaxAttempts != 5 {
		t.Fatalf("Get(routed) after its claim = %+v %v", info, err)
	}
	eventually(t, 10*time.Second, "tally moves routed to claimed", func() bool {
		c, _ := tl.Batch("b")
		return c == Counts{Total: 2, Pending: 1, Claimed: 1}
	})
	hist, _, err = s.TaskHistory(ctx, "routed", 10)
	if err != nil || len(hist) != 2 || hist[0].Status.State != StateClaimed || hist[0].Revision != cl.Token || hist[1].Status.State != StatePending {
		t.Fatalf("TaskHistory(routed) = %+v %v; want CLAIMED at the token, then PENDING", hist, err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
}

// Cancelling a task that was never claimed cancels it at once (its ready
// entry goes, its first state is CANCELLED); retrying it before that
// changes nothing, and after it puts it back as PENDING, claimable.
func TestCancelAndRetryNeverClaimed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, cli := nsStore(t, "fresh-cancel")
	submitSpecs(t, s, Spec{ID: "t1", Queue: "q"})
	if changed, err := s.Retry(ctx, "t1"); err != nil || changed {
		t.Fatalf("retry of a never-claimed task: %v %v, want no change", changed, err)
	}
	if _, err := s.Retry(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retry of an unknown task: %v", err)
	}
	if _, err := s.Cancel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancel of an unknown task: %v", err)
	}
	if res, err := s.Cancel(ctx, "t1"); err != nil || res.State != StateCancelled || res.Requested {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	if n, err := s.PendingCount(ctx); err != nil || n != 0 {
		t.Fatalf("after cancel: %d pending (%v), want the ready entry gone", n, err)
	}
	if st := taskState(t, cli, "t1"); st.State != StateCancelled || !hasState(t, cli, "t1") {
		t.Fatalf("after cancel: %+v", st)
	}
	if res, err := s.Cancel(ctx, "t1"); err != nil || res.State != StateCancelled {
		t.Fatalf("cancel again: %+v %v", res, err)
	}
	if changed, err := s.Retry(ctx, "t1"); err != nil || !changed {
		t.Fatalf("retry: %v %v", changed, err)
	}
	st := taskState(t, cli, "t1")
	if st.State != StatePending || st.Attempt != 0 {
		t.Fatalf("after retry: %+v", st)
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Revoke(context.Background(), lease.ID)
	ready, err := cli.Get(ctx, st.Index)
	if err != nil || len(ready.Kvs) != 1 {
		t.Fatalf("ready entry after retry: %v %v", ready, err)
	}
	rst, err := decodeReady(st.Index, ready.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.claim(ctx, st.Index, ready.Kvs[0].ModRevision, rst, Holder{Worker: "w", Lease: lease.ID}, waitKey(lease.ID, 1))
	if err != nil || c.Status.Attempt != 1 {
		t.Fatalf("claim after retry: %+v %v", c, err)
	}
}

// Two sidecars (each its own client and lease) claim the same
// never-claimed task at once, round after round: exactly one claim
// succeeds, the state names its holder and token, and the loser changed
// nothing.
func TestRacingFirstClaimsOneWins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stores [2]*Store
	var holders [2]Holder
	var cli *clientv3.Client
	for i := range stores {
		s, c := nsStore(t, "fresh-race")
		lease, err := c.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Revoke(context.Background(), lease.ID)
		stores[i], holders[i], cli = s, Holder{Worker: fmt.Sprintf("w%d", i), Lease: lease.ID}, c
	}
	wins := [2]int{}
	for round := range 20 {
		id := fmt.Sprintf("r%02d", round)
		submitSpecs(t, stores[0], Spec{ID: id, Queue: "q"})
		resp, err := cli.Get(ctx, readyPrefix("q"), clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("round %d: ready entries %v %v", round, resp, err)
		}
		kv := resp.Kvs[0]
		st, err := decodeReady(string(kv.Key), kv.Value)
		if err != nil {
			t.Fatal(err)
		}
		var (
			start   = make(chan struct{})
			results [2]*Claimed
			errs    [2]error
			wg      sync.WaitGroup
		)
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = stores[i].claim(ctx, string(kv.Key), kv.ModRevision, st, holders[i], waitKey(holders[i].Lease, uint64(round+1)))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range stores {
			switch {
			case errs[i] == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both claims succeeded: %+v %+v", round, results[0], results[1])
				}
				winner = i
			case !errors.Is(errs[i], errConflict):
				t.Fatalf("round %d: claim %d: %v, want a conflict", round, i, errs[i])
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no claim succeeded: %v %v", round, errs[0], errs[1])
		}
		wins[winner]++
		got := taskState(t, cli, id)
		if got.State != StateClaimed || got.Attempt != 1 || got.Holder != holders[winner].Worker {
			t.Fatalf("round %d: state %+v, want CLAIMED by %s at attempt 1", round, got, holders[winner].Worker)
		}
		ck, err := cli.Get(ctx, claimKey(id))
		if err != nil || len(ck.Kvs) != 1 || ck.Kvs[0].CreateRevision != results[winner].Token || clientv3.LeaseID(ck.Kvs[0].Lease) != holders[winner].Lease {
			t.Fatalf("round %d: claim key %v %v, want token %d under the winner's lease", round, ck, err, results[winner].Token)
		}
		if err := stores[winner].Complete(ctx, id, results[winner].Token, results[winner].Status, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wins: %v", wins)
}

// A task whose first claim lapses (its sidecar's lease expired) goes back
// to PENDING with the attempt counted, and is claimed again.
func TestFirstClaimLapsedIsPendingAtAttemptOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(t, "fresh-lapse", Config{SweepInterval: time.Second}, nil, nil)
	eventually(t, 10*time.Second, "scheduler elected", r.d.Leading)
	submitSpecs(t, r.store, Spec{ID: "t1", Queue: "q"})
	lease, err := r.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.cli.Get(ctx, readyPrefix("q"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("ready entries %v %v", resp, err)
	}
	st, err := decodeReady(string(resp.Kvs[0].Key), resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.store.claim(ctx, string(resp.Kvs[0].Key), resp.Kvs[0].ModRevision, st, Holder{Worker: "gone", Lease: lease.ID}, waitKey(lease.ID, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Revoke(ctx, lease.ID); err != nil { // the holder's lease ends
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "t1 back to PENDING", func() bool {
		st := taskState(t, r.cli, "t1")
		return st.State == StatePending && st.Attempt == 1
	})
	if info, err := r.store.Get(ctx, "t1"); err != nil || info.LastError == nil || info.Token != 0 {
		t.Fatalf("Get after the lapse: %+v %v; want the lost claim recorded and no live claim", info, err)
	}
	c, err := r.d.Next(ctx, []string{"q"}, 0, nil)
	if err != nil || c == nil || c.ID != "t1" || c.Status.Attempt != 2 || c.Token <= first.Token {
		t.Fatalf("claim after the lapse: %+v %v; want t1 at attempt 2 with a higher token than %d", c, err, first.Token)
	}
	if err := r.d.Complete(ctx, c.Claim(), nil); err != nil {
		t.Fatal(err)
	}
}
