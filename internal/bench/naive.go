package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The naive pattern's rows: tasks/<id> holds the row (its state), and
// pending/<id> indexes the PENDING rows, as an index on the status column
// would in a database.
const (
	naiveRow     = "tasks/"
	naivePending = "pending/"
)

// naive measures the classic optimistic-lock pattern on etcd, what
// `SELECT ... WHERE state='PENDING' ORDER BY id LIMIT 1` followed by
// `UPDATE ... SET state='PROCESSING' WHERE id=? AND version=?` becomes:
// every consumer reads the first pending entry, then compare-and-swaps it
// (delete the index entry, mark the row PROCESSING) if its mod revision is
// still the one read; on a conflict it reads again. A claimed task is
// completed with a second compare-and-swap (state DONE). The tasks are
// written first (not timed); a consumer stops when it finds no pending
// entry.
func (r *runner) naive(ctx context.Context, consumers int) (Result, error) {
	name := pointName(SystemNaive, consumers)
	var failed atomic.Int64
	clis, err := r.clients(name, r.conns(consumers), &failed)
	if err != nil {
		return Result{}, err
	}
	defer closeEtcd(clis)
	const perTxn = 32 // two puts a task, under etcd's default of 128 ops
	for start := 0; start < r.cfg.Tasks; start += perTxn {
		var ops []clientv3.Op
		for n := start; n < min(start+perTxn, r.cfg.Tasks); n++ {
			id := taskID(n)
			ops = append(ops, clientv3.OpPut(naiveRow+id, `{"state":"PENDING"}`), clientv3.OpPut(naivePending+id, id))
		}
		if _, err := clis[0].Txn(ctx).Then(ops...).Commit(); err != nil {
			return Result{}, fmt.Errorf("writing tasks: %w", err)
		}
	}

	m0, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	failed0 := failed.Load()
	lats := make([]latencies, consumers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	t := newTally(r.cfg.Tasks, stop)
	began, err := race(wctx, consumers, func(ctx context.Context, i int) error {
		kv := clis[i%len(clis)].KV
		for {
			t0 := time.Now()
			id, rev, err := naiveClaim(ctx, kv)
			if err != nil || id == "" {
				return ignoreDone(ctx, err)
			}
			lats[i].add(time.Since(t0))
			resp, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(naiveRow+id), "=", rev)).
				Then(clientv3.OpPut(naiveRow+id, `{"state":"DONE"}`)).Commit()
			if err != nil {
				return ignoreDone(ctx, err)
			}
			if !resp.Succeeded {
				return fmt.Errorf("naive: completing %s: the row changed under its holder", id)
			}
			t.deliver(id)
		}
	})
	if err != nil {
		return Result{}, err
	}
	m1, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	c := counts{began: began, conflicts: failed.Load() - failed0, revs: m1.rev - m0.rev, cpu: m1.cpu - m0.cpu, lat: merge(lats)}
	c.delivered, c.duplicates, c.end = t.result()
	return r.result(SystemNaive, consumers, r.cfg.Tasks, c)
}

// naiveClaim reads the first pending entry and tries to take it until it
// succeeds; it returns the task id and the row's new mod revision, or ""
// when nothing is pending.
func naiveClaim(ctx context.Context, kv clientv3.KV) (string, int64, error) {
	for {
		resp, err := kv.Get(ctx, naivePending, clientv3.WithPrefix(), clientv3.WithLimit(1))
		if err != nil {
			return "", 0, err
		}
		if len(resp.Kvs) == 0 {
			return "", 0, nil
		}
		e := resp.Kvs[0]
		id := string(e.Value)
		tr, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(e.Key)), "=", e.ModRevision)).
			Then(clientv3.OpDelete(string(e.Key)), clientv3.OpPut(naiveRow+id, `{"state":"PROCESSING"}`)).Commit()
		if err != nil {
			return "", 0, err
		}
		if tr.Succeeded {
			return id, tr.Header.Revision, nil
		}
	}
}
