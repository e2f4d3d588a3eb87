package workqueue

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// follow watches this sidecar's own wait keys, q/w/<lease>/, until ctx
// ends: an assignment goes to the Next call waiting on its key, a cancel
// notice to the worker holding the task. It is the only watch a sidecar
// that is not the scheduler keeps on the work queue, so the events it
// receives are those of the tasks assigned to it, whatever the fleet's
// size.
func (d *Dispatcher) follow(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ls, err := d.lease.WaitSession(ctx)
		if err != nil {
			return
		}
		prefix := waitPrefix(ls.Lease())
		// Read what was assigned while no watch ran (at start, or after
		// the watch failed), then watch from there.
		rctx, cancel := context.WithTimeout(ctx, claimTimeout)
		resp, err := d.kv.Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Logger.Warn("reading wait keys failed; retrying", "err", err, "retry_in", backoff)
			}
			select {
			case <-d.cfg.Clock.After(backoff):
			case <-ctx.Done():
			case <-ls.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for _, kv := range resp.Kvs {
			d.applyWait(string(kv.Key), kv.Value, kv.ModRevision)
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := d.watcher.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		d.followWatch(ch, ls.Done())
		cancel()
		select {
		case <-ls.Done():
			d.dropLostLease()
		default:
		}
	}
}

// followWatch applies watch responses until the watch fails or the lease
// ends.
func (d *Dispatcher) followWatch(ch clientv3.WatchChan, leaseDone <-chan struct{}) {
	for {
		select {
		case <-leaseDone:
			return
		case resp, ok := <-ch:
			if !ok {
				return
			}
			if err := resp.Err(); err != nil {
				d.cfg.Logger.Warn("watch of wait keys failed; resynchronising", "err", err)
				return
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.PUT {
					d.applyWait(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
				}
			}
		}
	}
}

// applyWait acts on the value of one of this sidecar's wait keys.
func (d *Dispatcher) applyWait(key string, value []byte, modRev int64) {
	rec, err := decodeWait(value)
	if err != nil || rec.Task == "" {
		return // a registration, or not ours to read
	}
	_, seq, err := parseWaitKey(key)
	if err != nil {
		return
	}
	if rec.Cancel {
		if rec.Token != 0 {
			d.deliver(seq, rec.Task, rec.Token) // a no-op when delivered before
		}
		d.mu.Lock()
		f := d.cancelRequestedLocked(rec.Task, key)
		d.mu.Unlock()
		if f != nil {
			f()
		}
		return
	}
	d.deliver(seq, rec.Task, modRev)
}
