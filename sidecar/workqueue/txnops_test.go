package workqueue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdWithMaxTxnOps8 starts an etcd of the test's own with --max-txn-ops 8
// and returns a client of namespace ns.
func etcdWithMaxTxnOps8(t *testing.T, ns string) *clientv3.Client {
	t.Helper()
	_, cli := privateEtcdWith(t, ns, embedetcd.Config{MaxTxnOps: 8})
	return cli
}

// countTxns counts the transactions committed through a KV.
type countTxns struct {
	clientv3.KV
	n atomic.Int64
}

func (c *countTxns) Txn(ctx context.Context) clientv3.Txn {
	c.n.Add(1)
	return c.KV.Txn(ctx)
}

// Submit fills each transaction up to etcd's --max-txn-ops, which bounds
// each of a transaction's lists (compares, writes, reads), not their sum:
// on an etcd started with --max-txn-ops 8, plain tasks (2 writes each) go
// 4 to a transaction, batched ones (3) 2, and held-back batched ones (4)
// with their batch's pin 1; every task is written and etcd refuses none.
func TestSubmitFillsTransactionsToMaxTxnOps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := etcdWithMaxTxnOps8(t, "ops")
	kv := &countTxns{KV: cli.KV}
	s, err := NewStore(kv, Config{MaxTxnOps: 8})
	if err != nil {
		t.Fatal(err)
	}
	specs := func(prefix string, n int, f func(i int, sp *Spec)) []Spec {
		out := make([]Spec, n)
		for i := range out {
			out[i] = Spec{ID: fmt.Sprintf("%s%d", prefix, i), Queue: "q", Payload: []byte(`{}`)}
			f(i, &out[i])
		}
		return out
	}
	for _, c := range []struct {
		name  string
		specs []Spec
		opts  []SubmitOption
		txns  int64
	}{
		{"plain", specs("p", 40, func(int, *Spec) {}), nil, 10},
		{"batched", specs("b", 40, func(_ int, sp *Spec) { sp.Batch = "b" }), nil, 20},
		{"held back in a pinned batch", specs("h", 10, func(_ int, sp *Spec) { sp.Batch, sp.NotBefore = "p", time.Now().Add(time.Hour) }),
			[]SubmitOption{WithPin(Pin{Name: "global", Revision: 1})}, 10},
	} {
		before := kv.n.Load()
		res, err := s.Submit(ctx, c.specs, c.opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		created := 0
		for _, ok := range res.Created {
			if ok {
				created++
			}
		}
		// WithPin writes the pin in a transaction of its own first.
		if got := kv.n.Load() - before; created != len(c.specs) || got > c.txns+1 {
			t.Errorf("%s: %d of %d created in %d transactions, want all in at most %d", c.name, created, len(c.specs), got, c.txns+1)
		}
	}
}

// The tally's first read asks for at most MaxTxnOps statuses a
// transaction: on an etcd started with --max-txn-ops 8 it counts 20 tasks
// (a review found it fixed at 128: refused, the page stuck on "Counting").
func TestTallyReadsWithinMaxTxnOps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := etcdWithMaxTxnOps8(t, "tally8")
	s, err := NewStore(cli.KV, Config{MaxTxnOps: 8})
	if err != nil {
		t.Fatal(err)
	}
	var specs []Spec
	for i := range 20 {
		specs = append(specs, Spec{ID: fmt.Sprintf("t%02d", i), Queue: "q", Batch: "b"})
	}
	submitSpecs(t, s, specs...)
	tl := NewTally(cli.KV, cli.Watcher)
	tl.MaxTxnOps = 8
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); tl.Run(rctx) }()
	defer func() { stop(); <-done }()
	eventually(t, 10*time.Second, "the first read", tl.Ready)
	if c, _ := tl.Batch("b"); c != (Counts{Total: 20, Pending: 20}) {
		t.Fatalf("batch b: %+v, want 20 pending", c)
	}
}
