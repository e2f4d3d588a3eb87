package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Outstanding counts a task until a state says it finished: tasks it
// created, tasks that existed (Settle reads them: a finished one leaves at
// once), and finishes it missed because its watch was compacted (Run reads
// the set again, then watches on).
func TestOutstandingFollowsFinishesAcrossCompaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, cli := privateEtcd(t, "outstanding")
	s, err := NewStore(cli.KV, Config{MaxTxnOps: 8}) // Settle reads in several transactions
	if err != nil {
		t.Fatal(err)
	}
	specs := func(from, to int) ([]Spec, []string) {
		var sps []Spec
		var ids []string
		for i := from; i < to; i++ {
			sp := Spec{ID: fmt.Sprintf("t%02d", i), Queue: "q", Payload: json.RawMessage(`{}`)}
			if err := s.Normalize(&sp, ""); err != nil {
				t.Fatal(err)
			}
			sps, ids = append(sps, sp), append(ids, sp.ID)
		}
		return sps, ids
	}
	cancelTask := func(id string) {
		t.Helper()
		if res, err := s.Cancel(ctx, id); err != nil || res.State != StateCancelled {
			t.Fatalf("cancel %s: %+v %v", id, res, err)
		}
	}
	// t00..t09 exist before the set starts; t00 and t01 are finished.
	old, oldIDs := specs(0, 10)
	if _, err := s.Submit(ctx, old); err != nil {
		t.Fatal(err)
	}
	cancelTask("t00")
	cancelTask("t01")

	o, err := s.StartOutstanding(ctx, cli.Watcher)
	if err != nil {
		t.Fatal(err)
	}
	o.Add(oldIDs)
	o.Created(oldIDs)
	if err := o.Settle(ctx, oldIDs); err != nil {
		t.Fatal(err)
	}
	if n := o.Len(); n != 8 {
		t.Fatalf("after Settle: %d unfinished, want 8 (t00 and t01 were cancelled)", n)
	}
	fresh, freshIDs := specs(10, 20)
	o.Add(freshIDs)
	if _, err := s.Submit(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	o.Created(freshIDs)

	// Finishes before Run starts, then a compaction past them: the watch
	// from the start revision fails as compacted, and Run must read the
	// set again to see them.
	cancelTask("t02")
	cancelTask("t10")
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = o.Run(rctx)
	}()
	defer func() { stop(); wg.Wait() }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := o.WaitBelow(wctx, 16); err != nil {
		t.Fatalf("waiting for the finishes before the compaction: %v (%d unfinished, want 16)", err, o.Len())
	}
	// And the watch goes on after the resync.
	for _, id := range []string{"t03", "t11", "t12"} {
		cancelTask(id)
	}
	if err := o.WaitBelow(wctx, 13); err != nil {
		t.Fatalf("waiting for the finishes after the resync: %v (%d unfinished, want 13)", err, o.Len())
	}
	if n := o.Len(); n != 13 {
		t.Fatalf("%d unfinished, want 13", n)
	}
}
