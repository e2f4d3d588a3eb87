package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ceilingFactor: the ceiling runs this many times Config.Tasks
// transactions, each far cheaper than delivering a task, so that it runs
// long enough to be steady.
const ceilingFactor = 5

// ceiling measures raw etcd write transactions at the given concurrency:
// each consumer compare-and-swaps a key of its own (so no transaction
// conflicts) with a value the size of a task status, ceilingFactor ×
// Config.Tasks transactions in all. It is the most that anything built on
// this etcd can write.
func (r *runner) ceiling(ctx context.Context, consumers int) (Result, error) {
	name := pointName(SystemCeiling, consumers)
	var failed atomic.Int64
	clis, err := r.clients(name, r.conns(consumers), &failed)
	if err != nil {
		return Result{}, err
	}
	defer closeEtcd(clis)
	value := strings.Repeat("x", 256)
	m0, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	var next atomic.Int64
	lats := make([]latencies, consumers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	total := ceilingFactor * r.cfg.Tasks
	t := newTally(total, stop)
	began, err := race(wctx, consumers, func(ctx context.Context, i int) error {
		kv := clis[i%len(clis)].KV
		key := fmt.Sprintf("w/%04d", i)
		var last int64 // the key's mod revision; 0 while it does not exist
		for {
			n := next.Add(1)
			if n > int64(total) {
				return nil
			}
			t0 := time.Now()
			resp, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", last)).
				Then(clientv3.OpPut(key, value)).Commit()
			if err != nil {
				return ignoreDone(ctx, err)
			}
			if !resp.Succeeded {
				return fmt.Errorf("ceiling: the compare on %s failed; nobody else writes it", key)
			}
			last = resp.Header.Revision
			lats[i].add(time.Since(t0))
			t.deliver(strconv.FormatInt(n, 10))
		}
	})
	if err != nil {
		return Result{}, err
	}
	m1, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	c := counts{began: began, conflicts: failed.Load(), revs: m1.rev - m0.rev, cpu: m1.cpu - m0.cpu, lat: merge(lats)}
	c.delivered, c.duplicates, c.end = t.result()
	return r.result(SystemCeiling, consumers, total, c)
}
