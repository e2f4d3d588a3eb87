package workqueue

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Track makes the dispatcher follow queues before any Next asks for them:
// their ready windows are loaded (so the first claim needs no read) and
// their depth is sampled for the Observer from the start.
func (d *Dispatcher) Track(queues ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range queues {
		if ValidateQueue(q) == nil {
			d.windowLocked(q)
		}
	}
}

// depthQueuesPerTxn bounds the count ranges of one sampling transaction
// (two more ops read the claim and delay indexes).
const depthQueuesPerTxn = 100

// sampleDepth reports to the Observer how many tasks of each queue are
// ready, delayed and claimed. It reads, in one transaction, the claim and
// delay indexes (tasks in flight or waiting for a retry, read whole) and the
// number of ready entries of each queue this sidecar follows (counted by
// etcd, no keys returned). Queues reported before and now empty are
// reported as zero, so a gauge never keeps a stale value.
func (d *Dispatcher) sampleDepth(ctx context.Context) {
	d.mu.Lock()
	known := make(map[string]bool, len(d.windows)+len(d.depthSeen))
	for q := range d.windows {
		known[q] = true
	}
	for q := range d.depthSeen {
		known[q] = true
	}
	d.mu.Unlock()
	names := make([]string, 0, len(known))
	for q := range known {
		names = append(names, q)
	}
	sort.Strings(names)

	type depth struct{ pending, delayed, claimed int64 }
	counts := map[string]*depth{}
	get := func(q string) *depth {
		if counts[q] == nil {
			counts[q] = &depth{}
		}
		return counts[q]
	}
	for start := 0; start == 0 || start < len(names); start += depthQueuesPerTxn {
		chunk := names[start:min(start+depthQueuesPerTxn, len(names))]
		var ops []clientv3.Op
		if start == 0 {
			ops = append(ops, clientv3.OpGet(prefixClaim, clientv3.WithPrefix()), clientv3.OpGet(prefixDelay, clientv3.WithPrefix()))
		}
		for _, q := range chunk {
			p := readyPrefix(q)
			ops = append(ops, clientv3.OpGet(p, clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithCountOnly()))
		}
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := d.kv.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Logger.Warn("sampling queue depth failed", "err", err)
			}
			return
		}
		rs := resp.Responses
		if start == 0 {
			for _, kv := range rs[0].GetResponseRange().GetKvs() {
				if st, err := decodeStatus(kv.Value); err == nil {
					get(st.Queue).claimed++
				}
			}
			for _, kv := range rs[1].GetResponseRange().GetKvs() {
				if st, err := decodeStatus(kv.Value); err == nil {
					get(st.Queue).delayed++
				}
			}
			rs = rs[2:]
		}
		for i, q := range chunk {
			get(q).pending = rs[i].GetResponseRange().GetCount()
		}
		if len(names) == 0 {
			break
		}
	}
	d.mu.Lock()
	for q := range counts {
		d.depthSeen[q] = true
	}
	d.mu.Unlock()
	for _, q := range names {
		get(q)
	}
	for q, c := range counts {
		d.cfg.Observer.QueueDepth(q, c.pending, c.delayed, c.claimed)
	}
}
