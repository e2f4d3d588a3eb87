package workqueue

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// depthQueuesPerTxn bounds the count ranges of one sampling transaction
// (two more ops read the claim and delay indexes).
const depthQueuesPerTxn = 100

// sampleDepth reports to the Observer how many tasks of each queue are
// ready, delayed and claimed. It reads, in one transaction, the claim and
// delay indexes (tasks in flight or waiting for a retry, read whole) and the
// number of ready entries of each queue this sidecar follows (counted by
// etcd, no keys returned). Queues reported before and now empty are
// reported as zero, so a gauge never keeps a stale value.
//
// Only the scheduler samples, so the fleet reports one value per queue;
// seen holds the queues reported during this term.
func (d *Dispatcher) sampleDepth(ctx context.Context, seen map[string]bool) {
	d.mu.Lock()
	known := make(map[string]bool, len(d.queues)+len(seen))
	for _, q := range d.queues {
		known[q] = true
	}
	for q := range d.schedQs {
		known[q] = true
	}
	d.mu.Unlock()
	for q := range seen {
		known[q] = true
	}
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
	for q := range counts {
		seen[q] = true
	}
	for _, q := range names {
		get(q)
	}
	for q, c := range counts {
		d.cfg.Observer.QueueDepth(q, c.pending, c.delayed, c.claimed)
	}
}

// clearDepth reports the queues sampled during a term that ended as empty,
// so that the gauges of a sidecar that is no longer the scheduler do not
// add to the new scheduler's.
func (d *Dispatcher) clearDepth(seen map[string]bool) {
	for q := range seen {
		d.cfg.Observer.QueueDepth(q, 0, 0, 0)
	}
}
