package bench

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// countingKV counts the transactions that committed without succeeding
// (their compare failed): for the anchors, each one is a lost claim race.
type countingKV struct {
	clientv3.KV
	failed *atomic.Int64
}

func (k countingKV) Txn(ctx context.Context) clientv3.Txn {
	return countingTxn{Txn: k.KV.Txn(ctx), failed: k.failed}
}

type countingTxn struct {
	clientv3.Txn
	failed *atomic.Int64
}

func (t countingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return countingTxn{Txn: t.Txn.If(cs...), failed: t.failed}
}

func (t countingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return countingTxn{Txn: t.Txn.Then(ops...), failed: t.failed}
}

func (t countingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return countingTxn{Txn: t.Txn.Else(ops...), failed: t.failed}
}

func (t countingTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && !resp.Succeeded {
		t.failed.Add(1)
	}
	return resp, err
}
