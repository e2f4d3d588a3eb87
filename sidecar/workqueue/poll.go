package workqueue

import (
	"context"
	"errors"
	"fmt"

	"github.com/batonhq/baton/sidecar/coord"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// pollAttempts bounds the claim transactions of one Next with wait 0.
const pollAttempts = 8

// pollScan is how many head entries of a queue a poll reads at a time,
// and pollPages how many such pages at most.
const (
	pollScan  = 128
	pollPages = 8
)

// poll is Next with wait 0: it reads the head of each queue's ready index
// and claims the first entry this sidecar may take, without the
// scheduler. Racing claimers are resolved by the claim transaction's
// compare, so polls are for workers that check for work now and then, not
// for a fleet waiting for work (which registers wait keys instead).
func (d *Dispatcher) poll(ctx context.Context, queues []string, sess *coord.Session) (*Claimed, error) {
	// Right after start (or a lost lease) wait for the lease a little
	// rather than answer UNAVAILABLE.
	lctx, cancel := context.WithTimeout(ctx, claimTimeout)
	ls, err := d.lease.WaitSession(lctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, coord.ErrNoLease
	}
	sessID := ""
	if sess != nil {
		sessID = sess.ID
	}
	cl := claimTrace{start: d.cfg.Now()}
	for range pollAttempts {
		e, ok, err := d.store.head(ctx, queues, d.labels)
		if err != nil || !ok {
			return nil, err
		}
		seq, _ := d.addWait(true)
		cctx, cancel := context.WithTimeout(ctx, claimTimeout)
		c, err := d.store.claim(cctx, e.key, e.modRev, e.st, Holder{Worker: d.worker, Session: sessID, Lease: ls.Lease()}, waitKey(ls.Lease(), seq))
		cancel()
		d.endPollWait(seq, e.key, c, err)
		switch {
		case err == nil:
			if err := d.trusted(ctx, c); err != nil {
				d.untake(c.Token)
				d.giveBack(c.ID, c.Token)
				return nil, err
			}
			return d.claimed(ctx, c, sess, cl)
		case errors.Is(err, errConflict), errors.Is(err, errZombie):
			d.mu.Lock()
			d.stats.Conflicts++
			d.mu.Unlock()
			d.conflict(ctx, e, &cl)
			if errors.Is(err, errZombie) {
				d.cfg.Logger.WarnContext(ctx, "dropping ready entry of a claimed task", "key", e.key)
				_ = d.store.dropZombie(ctx, e.key, e.modRev)
			}
		case c != nil:
			d.discard(ctx, c, err)
		default:
			return nil, fmt.Errorf("claim: %w", err)
		}
	}
	return nil, nil
}

// endPollWait forgets the wait key of a poll's claim transaction. When the
// transaction failed without saying whether etcd applied it, and the watch
// showed that it did, the claim reached no worker and goes back; if the
// watch shows it later, deliver finds no wait and gives it back then.
func (d *Dispatcher) endPollWait(seq uint64, readyKey string, c *Claimed, err error) {
	d.mu.Lock()
	lw := d.waits[seq]
	delete(d.waits, seq)
	var back int64
	switch {
	case c != nil:
		d.taken[c.Token] = true
	case err != nil && lw != nil && lw.polled != 0 && !errors.Is(err, errConflict) && !errors.Is(err, errZombie):
		back = lw.polled
		delete(d.taken, back)
	}
	d.mu.Unlock()
	if back != 0 {
		if e, perr := parseReadyKey(readyKey); perr == nil {
			d.giveBack(e.ID, back)
		}
	}
}

// head returns the first entry that a sidecar with labels may claim from
// the first of queues that is not paused and has one. It reads the head of
// each queue pollScan entries at a time, at most pollPages pages, so that
// entries requiring labels this sidecar lacks do not hide the rest.
func (s *Store) head(ctx context.Context, queues []string, labels map[string]string) (entry, bool, error) {
	for _, q := range queues {
		p := readyPrefix(q)
		end := clientv3.GetPrefixRangeEnd(p)
		resp, err := s.kv.Txn(ctx).Then(
			clientv3.OpGet(pauseKey(q), clientv3.WithCountOnly()),
			clientv3.OpGet(p, clientv3.WithRange(end), clientv3.WithLimit(pollScan)),
		).Commit()
		if err != nil {
			return entry{}, false, err
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			continue // paused
		}
		page := resp.Responses[1].GetResponseRange()
		kvs, more, rev := page.Kvs, page.More, resp.Header.Revision
		for n := 1; ; n++ {
			for _, kv := range kvs {
				st, err := decodeReady(string(kv.Key), kv.Value)
				if err != nil || !LabelsMatch(st.Require, labels) {
					continue // a malformed entry never stops a queue
				}
				return entry{key: string(kv.Key), modRev: kv.ModRevision, st: st}, true, nil
			}
			if !more || n >= pollPages || len(kvs) == 0 {
				break
			}
			next, err := s.kv.Get(ctx, string(kvs[len(kvs)-1].Key)+"\x00", clientv3.WithRange(end), clientv3.WithLimit(pollScan), clientv3.WithRev(rev))
			if err != nil {
				return entry{}, false, err
			}
			kvs, more = next.Kvs, next.More
		}
	}
	return entry{}, false, nil
}
