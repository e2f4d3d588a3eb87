package workqueue

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
)

// maintain runs the scheduler's background duties until ctx ends (the
// term ends): promoting delayed tasks when due, recovering orphaned
// claims, expiring claims past their deadline, removing finished tasks
// past retention and sampling queue depth. Only the scheduler runs them,
// so each costs O(1) per fleet. orphans carries ids of tasks whose claim
// key vanished with its lease; hints the due times of delay entries put.
func (d *Dispatcher) maintain(ctx context.Context, orphans <-chan string, hints <-chan time.Time) {
	sweep := d.cfg.Clock.NewTicker(d.cfg.SweepInterval)
	defer sweep.Stop()
	var depth <-chan time.Time
	depthSeen := map[string]bool{}
	if _, nop := d.cfg.Observer.(nopObserver); !nop {
		t := d.cfg.Clock.NewTicker(d.cfg.DepthInterval)
		defer t.Stop()
		depth = t.Chan()
		defer d.clearDepth(depthSeen)
	}
	delay := d.cfg.Clock.NewTimer(0) // fires at once: promote what is due at start
	defer delay.Stop()
	next := time.Time{}
	d.sweep(ctx)
	d.collect(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.Chan():
			d.sweep(ctx)
			d.collect(ctx)
			// Promote too: a delay entry put while the watch was down
			// sent no hint.
			if due := d.promote(ctx); !due.IsZero() && (next.IsZero() || due.Before(next)) {
				next = due
				delay.Reset(max(d.cfg.Clock.Until(due), 0))
			}
		case <-depth:
			d.sampleDepth(ctx, depthSeen)
		case id := <-orphans:
			d.recoverByState(ctx, id)
		case due := <-hints:
			if next.IsZero() || due.Before(next) {
				next = due
				delay.Reset(max(d.cfg.Clock.Until(due), 0))
			}
		case <-delay.Chan():
			next = d.promote(ctx)
			if !next.IsZero() {
				delay.Reset(max(d.cfg.Clock.Until(next), 0))
			}
		}
	}
}

// dropLostLease forgets held claims bound to a lease other than the
// current one: etcd deleted their claim keys when the lease expired, and
// the scheduler returns the tasks when it sees the deletion.
func (d *Dispatcher) dropLostLease() {
	var cur int64
	if s, _, err := d.lease.Session(); err == nil {
		cur = int64(s.Lease())
	}
	d.mu.Lock()
	var lost []*held
	for _, h := range d.held {
		if h.c.Status.Lease != cur {
			lost = append(lost, h)
		}
	}
	d.mu.Unlock()
	for _, h := range lost {
		d.cfg.Logger.Warn("claim lost with the sidecar's lease", "task", h.c.ID)
		d.forget(h.c.ID, h.c.Token, OutcomeLost)
	}
}

// recover returns an orphaned task (its claim key expired with its lease)
// to the queue, unless someone else did already.
func (d *Dispatcher) recover(ctx context.Context, o orphan) {
	r, err := d.store.recoverOrphan(ctx, o.id, o.token, o.st, lostMessage(ReasonLeaseExpired))
	if err != nil {
		d.cfg.Logger.Warn("recovering orphaned claim failed; the sweep retries", "task", o.id, "err", err)
		return
	}
	if r.ok {
		// Traced after the fact: the span shows the recovery in the task's
		// trace (under its submit span: the claim span's context is only
		// known to the sidecar that lost it).
		sctx, span := d.startInTrace(ctx, ParseTraceparent(r.traceparent), SpanRequeue,
			trace.WithAttributes(append(taskAttrs(o.id, o.st, o.token), AttrReason.String(string(ReasonLeaseExpired)))...))
		endSpan(span, r.state, nil)
		d.ended(o.st.Queue, ReasonLeaseExpired, r.state)
		d.mu.Lock()
		d.stats.Requeued++
		d.mu.Unlock()
		d.cfg.Logger.InfoContext(sctx, "orphaned claim returned to the queue", "task", o.id, "state", r.state)
	}
}

// sweep finds orphaned claims (a run marker without a claim key) and
// claims past their deadline, in one consistent read of both indexes. Its
// cost is proportional to the number of tasks in flight.
func (d *Dispatcher) sweep(ctx context.Context) {
	resp, err := d.kv.Txn(ctx).Then(
		clientv3.OpGet(prefixRun, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(prefixClaim, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("sweep failed", "err", err)
		}
		return
	}
	claims := map[string]bool{}
	now := d.cfg.Now()
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), prefixClaim)
		claims[id] = true
		st, err := decodeStatus(kv.Value)
		if err != nil || st.DeadlineMS == 0 || now.Before(time.UnixMilli(st.DeadlineMS).Add(d.cfg.ExpiryGrace)) {
			continue
		}
		d.mu.Lock()
		var parent trace.SpanContext
		if h := d.held[id]; h != nil && h.c.Token == kv.CreateRevision {
			parent = h.span
		}
		d.mu.Unlock()
		sctx, span := d.startInTrace(ctx, parent, SpanRequeue,
			trace.WithAttributes(append(taskAttrs(id, st, kv.CreateRevision), AttrReason.String(string(ReasonTimeout)))...))
		state, err := d.store.abandon(sctx, id, kv.CreateRevision, kv.ModRevision, st, lostMessage(ReasonTimeout))
		endSpan(span, state, err)
		if err == nil {
			d.forget(id, kv.CreateRevision, OutcomeLost)
			d.ended(st.Queue, ReasonTimeout, state)
			d.mu.Lock()
			d.stats.Expired++
			d.stats.Requeued++
			d.mu.Unlock()
			d.cfg.Logger.InfoContext(sctx, "expired claim returned to the queue", "task", id, "state", state)
		}
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), prefixRun)
		if claims[id] {
			continue
		}
		d.recoverByState(ctx, id)
	}
}

// recoverByState recovers task id if its state still says CLAIMED while
// its claim key is gone. The state was written by the claim transaction,
// so its mod revision is the lost claim's fencing token; if the task was
// recovered and claimed again meanwhile, the claim key exists and the
// recovery changes nothing.
func (d *Dispatcher) recoverByState(ctx context.Context, id string) {
	sresp, err := d.kv.Get(ctx, stateKey(id))
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("reading the state of an orphaned claim failed; the sweep retries", "task", id, "err", err)
		}
		return
	}
	if len(sresp.Kvs) == 0 {
		return
	}
	st, err := decodeStatus(sresp.Kvs[0].Value)
	if err != nil || st.State != StateClaimed {
		return
	}
	d.recover(ctx, orphan{id: id, token: sresp.Kvs[0].ModRevision, st: st})
}

// promote moves delayed tasks that are due into their ready index and
// returns when the next one is due (zero when none is waiting).
func (d *Dispatcher) promote(ctx context.Context) time.Time {
	// from moves past every page read: a malformed entry is skipped, not
	// removed, and re-reading from the start would read the same page
	// again and again once 128 of them lead the index.
	from := prefixDelay
	for {
		now := d.cfg.Now()
		resp, err := d.kv.Get(ctx, from, clientv3.WithRange(delayUpTo(now)), clientv3.WithLimit(128))
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Logger.Warn("promoting delayed tasks failed", "err", err)
			}
			return now.Add(time.Second)
		}
		for _, kv := range resp.Kvs {
			due, id, err := parseDelayKey(string(kv.Key))
			if err != nil {
				continue
			}
			st, err := decodeStatus(kv.Value)
			if err != nil {
				continue
			}
			st.State = StatePending
			st.Order = due.UnixNano()
			st.UpdatedMS = ms(now)
			_, ops := pendingOps(id, st)
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			r, err := d.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).Then(ops...).Commit()
			if err == nil && r.Succeeded {
				d.mu.Lock()
				d.stats.Promoted++
				d.mu.Unlock()
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	// The next due time is the first entry's that parses; a malformed one
	// ahead of it must not hide it.
	resp, err := d.kv.Get(ctx, prefixDelay, clientv3.WithPrefix(), clientv3.WithLimit(16), clientv3.WithKeysOnly())
	if err != nil {
		return time.Time{}
	}
	for _, kv := range resp.Kvs {
		if due, _, err := parseDelayKey(string(kv.Key)); err == nil {
			return due
		}
	}
	return time.Time{}
}

// collect removes finished tasks older than the retention period. It reads
// only the retention index entries that are due, never the whole keyspace.
// The tasks of a page of entries listed by one member key are removed
// together, in transactions that also rewrite the key without them (or
// delete it with its last): a key is rewritten once per transaction, not
// once per task, since each version stays as history until compaction.
// The member keys read are kept for the round (memberCache).
func (d *Dispatcher) collect(ctx context.Context) {
	cutoff := d.cfg.Now().Add(-d.cfg.Retention)
	batches := map[string]bool{}
	defer func() {
		for b := range batches {
			d.unpin(ctx, b)
		}
	}()
	fail := func(err error) {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("removing finished tasks failed", "err", err)
		}
	}
	// A task is 5 deletes and a compare; the member key's rewrite 1.
	perTxn := max(1, (d.cfg.MaxTxnOps-1)/5)
	var seen memberCache
	from := prefixGC
	for {
		resp, err := d.kv.Get(ctx, from, clientv3.WithRange(gcUpTo(cutoff)), clientv3.WithLimit(64))
		if err != nil {
			fail(err)
			return
		}
		groups := map[string][]gcEntry{} // member key ("": none) → its tasks
		var keys []string
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			e := gcEntry{key: key, modRev: kv.ModRevision, id: key[strings.LastIndexByte(key, '/')+1:], batch: string(kv.Value)}
			mk := ""
			if e.batch != "" {
				m, found, err := d.memberOf(ctx, e.batch, e.id, &seen)
				if err != nil {
					fail(err)
					return
				}
				if found {
					mk = m.Key
				}
			}
			if _, ok := groups[mk]; !ok {
				keys = append(keys, mk)
			}
			groups[mk] = append(groups[mk], e)
		}
		for _, mk := range keys {
			for es := groups[mk]; len(es) > 0; {
				n := min(len(es), perTxn)
				if err := d.remove(ctx, es[:n], mk, &seen, batches); err != nil {
					fail(err)
					return
				}
				es = es[n:]
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// gcEntry is a finished task due for removal, as its retention index
// entry (gc/<finished>/<id>, value: its batch) was read.
type gcEntry struct {
	key    string
	modRev int64
	id     string
	batch  string
}

// remove deletes the finished tasks es, all listed by member key mk (""
// for none), in one transaction that compares each task's retention entry
// (an operator's retry deletes it, so a retried task stays) and the member
// key as last read, and rewrites the key without them. When the
// transaction fails, each task is tried alone, the member key read again:
// one retried task does not keep the others. It returns an error only when
// etcd cannot be read.
func (d *Dispatcher) remove(ctx context.Context, es []gcEntry, mk string, seen *memberCache, batches map[string]bool) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.id
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.key), "=", e.modRev))
		ops = append(ops,
			clientv3.OpDelete(e.key),
			clientv3.OpDelete(taskKey(e.id)),
			clientv3.OpDelete(stateKey(e.id)),
			clientv3.OpDelete(resultKey(e.id)),
			clientv3.OpDelete(errorKey(e.id)),
		)
	}
	var m member
	if mk != "" {
		var found bool
		var err error
		m, found, err = d.memberOf(ctx, es[0].batch, es[0].id, seen)
		if err != nil {
			return err
		}
		if !found || m.Key != mk {
			return nil // changed since it was read: the next round
		}
		var op clientv3.Op
		m.IDs, op = m.without(ids...)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(m.Key), "=", m.ModRevision))
		ops = append(ops, op)
	}
	r, err := d.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil || !r.Succeeded {
		seen.drop(mk)
		if len(es) > 1 {
			for i := range es {
				if err := d.remove(ctx, es[i:i+1], mk, seen, batches); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if mk != "" {
		m.ModRevision = r.Header.Revision
		seen.put(m)
	}
	for _, e := range es {
		if e.batch != "" {
			batches[e.batch] = true
		}
	}
	d.mu.Lock()
	d.stats.Removed += int64(len(es))
	d.mu.Unlock()
	return nil
}

// memberOf returns the member key that lists task id of batch: from the
// cache, or read from etcd with its neighbours (added to the cache).
// found is false when no key lists the task.
func (d *Dispatcher) memberOf(ctx context.Context, batch, id string, seen *memberCache) (member, bool, error) {
	if m, ok := seen.lookup(batch, id); ok {
		return m, true, nil
	}
	resp, err := d.kv.Get(ctx, taskKey(id))
	if err != nil {
		return member{}, false, err
	}
	order := int64(-1) // no spec: only a key of the former layout can list it
	if len(resp.Kvs) == 1 {
		if sp, err := decodeSpec(resp.Kvs[0].Value); err == nil {
			order = sp.Order
		}
	}
	return findMember(ctx, d.kv, batch, id, order, seen.put)
}

// unpin removes the pinned config of a batch whose tasks are all gone. A
// submit into the batch touches the pin in the transaction that writes its
// tasks, so comparing the pin's mod revision with the one read together with
// the empty batch never removes the pin of tasks written meanwhile.
func (d *Dispatcher) unpin(ctx context.Context, batch string) {
	resp, err := d.kv.Txn(ctx).Then(
		clientv3.OpGet(pinKey(batch), clientv3.WithKeysOnly()),
		clientv3.OpGet(batchPrefix(batch), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return
	}
	pin := resp.Responses[0].GetResponseRange().Kvs
	if len(pin) == 0 || resp.Responses[1].GetResponseRange().Count > 0 {
		return
	}
	_, err = d.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(pinKey(batch)), "=", pin[0].ModRevision)).
		Then(clientv3.OpDelete(pinKey(batch))).Commit()
	if err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("removing the pin of a collected batch failed", "batch", batch, "err", err)
	}
}

// orphan is a task whose claim key is gone while its status still names
// the claim.
type orphan struct {
	id    string
	token int64
	st    Status
}
