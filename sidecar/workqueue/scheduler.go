package workqueue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// The scheduler is one sidecar of the fleet, chosen by an etcd election
// among all of them. It alone watches the whole work queue (q/): it
// matches the fleet's waiting Next calls (wait keys) with ready entries
// and writes each match as one claim transaction, and it runs the
// background duties (maintain.go). Every other sidecar watches only its own
// wait keys, so what one task costs does not grow with the fleet.
//
// Every assignment compares the scheduler's election key, so a scheduler
// that lost its lease or was deposed cannot assign: etcd's Election may
// report leadership it no longer has. When the scheduler dies, its key
// goes with its lease and the next candidate is elected: dispatch pauses
// for at most about one lease TTL, waiting Next calls stay registered and
// are served by the new scheduler.

// electionPrefix is where sidecars campaign to be the scheduler.
const electionPrefix = "elect/scheduler"

// maxInflight bounds the scheduler's assignment transactions in flight.
const maxInflight = 128

// maxBacklogs bounds the backlogs the scheduler keeps: past it, those no
// waiter waits on are dropped (and read again when one does).
const maxBacklogs = 256

// leadership is a won election: the election key and its create revision.
type leadership struct {
	key string
	rev int64
}

// campaign stands for election until ctx ends, and runs the scheduler
// while elected.
func (d *Dispatcher) campaign(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ls, err := d.lease.WaitSession(ctx)
		if err != nil {
			return
		}
		// The term ends with the lease.
		tctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-ls.Done():
				cancel()
			case <-tctx.Done():
			}
		}()
		el := concurrency.NewElection(ls, electionPrefix)
		err = el.Campaign(tctx, d.worker)
		if err == nil {
			backoff = 100 * time.Millisecond
			d.lead(tctx, leadership{key: el.Key(), rev: el.Rev()})
			// Step down at once so that the next candidate need not wait
			// for the lease to expire.
			rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = el.Resign(rctx)
			rcancel()
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			d.cfg.Logger.Warn("campaigning for scheduler failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-d.cfg.Clock.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// lead runs the scheduler for one term, until ctx ends or an assignment
// finds that this sidecar is no longer the leader.
func (d *Dispatcher) lead(ctx context.Context, ld leadership) {
	d.leading.Store(true)
	defer d.leading.Store(false)
	d.mu.Lock()
	d.stats.Terms++
	d.mu.Unlock()
	d.cfg.Logger.Info("elected scheduler", "worker_id", d.worker)
	defer d.cfg.Logger.Info("scheduler term ended", "worker_id", d.worker)

	var wg sync.WaitGroup
	defer wg.Wait()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	orphans := make(chan string, 1024)
	hints := make(chan time.Time, 64)
	wg.Add(1)
	go func() { defer wg.Done(); d.maintain(tctx, orphans, hints) }()
	for _, duty := range d.cfg.SchedulerDuties {
		wg.Add(1)
		go func() { defer wg.Done(); duty(tctx) }()
	}
	s := &schedLoop{d: d, ld: ld, orphans: orphans, hints: hints, results: make(chan result, maxInflight)}
	s.run(tctx)
}

// schedLoop is the scheduler's loop for one term. Its fields are owned by
// the goroutine running run; assignment goroutines only send on results.
type schedLoop struct {
	d       *Dispatcher
	ld      leadership
	m       *matcher
	rev     int64 // the revision the matcher reflects
	orphans chan<- string
	hints   chan<- time.Time

	results  chan result
	inflight int
	wg       sync.WaitGroup  // assignment goroutines
	retry    clockwork.Timer // set after etcd failed an assignment
}

// result is how an assignment transaction ended.
type result struct {
	a                        assignment
	ok, staleEntry, staleWtr bool
	zombie, deposed          bool
	err                      error
}

func (s *schedLoop) run(ctx context.Context) {
	defer func() {
		s.wg.Wait()
		if s.retry != nil {
			s.retry.Stop()
		}
	}()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := s.load(ctx); err != nil {
			if ctx.Err() == nil {
				s.d.cfg.Logger.Warn("scheduler: reading the queue failed; retrying", "err", err, "retry_in", backoff)
			}
			select {
			case <-s.d.cfg.Clock.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// Events between the old watch and this load were not seen: ask
		// the maintainer to promote what is due now (a zero due time).
		select {
		case s.hints <- time.Time{}:
		default:
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := s.d.watcher.Watch(wctx, prefixQ, clientv3.WithPrefix(), clientv3.WithRev(s.rev+1), clientv3.WithProgressNotify())
		deposed := s.loop(ctx, ch)
		cancel()
		// Let the assignments in flight end before the matcher is rebuilt.
		for s.inflight > 0 {
			r := <-s.results
			s.inflight--
			deposed = deposed || r.deposed
		}
		if deposed {
			s.d.cfg.Logger.Warn("scheduler deposed: its election key is gone")
			return
		}
	}
}

// load rebuilds the matcher from the wait keys and paused queues read at
// one revision; backlogs are read when a waiter needs them.
func (s *schedLoop) load(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	resp, err := s.d.kv.Txn(rctx).Then(
		clientv3.OpGet(prefixWait, clientv3.WithPrefix()),
		clientv3.OpGet(prefixPause, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return err
	}
	s.m = newMatcher(s.d.cfg.Window, s.d.cfg.AffinityWait)
	s.rev = resp.Header.Revision
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		s.putWait(string(kv.Key), kv.Value, kv.ModRevision)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		s.m.setPaused(strings.TrimPrefix(string(kv.Key), prefixPause), true)
	}
	s.m.dirty = true
	return nil
}

// loop follows the watch and matches until the watch fails (false: load
// again) or the scheduler is deposed (true).
func (s *schedLoop) loop(ctx context.Context, ch clientv3.WatchChan) bool {
	for {
		if err := s.loadBacklogs(ctx); err != nil {
			if ctx.Err() == nil {
				s.d.cfg.Logger.Warn("scheduler: reading a backlog failed; resynchronising", "err", err)
			}
			return false
		}
		if s.retry == nil {
			for _, a := range s.m.match(s.d.cfg.Now(), maxInflight-s.inflight) {
				s.launch(ctx, a)
			}
		}
		s.m.prune(maxBacklogs)
		if s.m.extending() {
			continue // bounded: a backlog grows at most maxExtend times
		}
		var retry <-chan time.Time
		if s.retry != nil {
			retry = s.retry.Chan()
		}
		select {
		case <-ctx.Done():
			return false
		case r := <-s.results:
			s.inflight--
			if s.handle(ctx, r) {
				return true
			}
		case <-retry:
			s.retry = nil
			s.m.dirty = true
		case resp, ok := <-ch:
			if !ok {
				return false
			}
			if err := resp.Err(); err != nil {
				s.d.cfg.Logger.Warn("scheduler: watch failed; resynchronising", "err", err)
				return false
			}
			if resp.IsProgressNotify() {
				s.rev = max(s.rev, resp.Header.Revision)
				continue
			}
			s.apply(resp.Events)
		}
	}
}

// loadBacklogs reads the head of each queue whose backlog needs it, at the
// revision the matcher reflects, so that later watch events apply on top.
func (s *schedLoop) loadBacklogs(ctx context.Context) error {
	for _, q := range s.m.toLoad() {
		b := s.m.backlog(q)
		if !b.loaded {
			s.d.noteSchedQueue(q)
		}
		p := readyPrefix(q)
		from, limit := p, max(b.limit, s.d.cfg.Window)
		extend := b.extend && b.loaded && !b.complete
		if extend {
			from, limit = b.horizon+"\x00", s.d.cfg.Window
		}
		rctx, cancel := context.WithTimeout(ctx, claimTimeout)
		resp, err := s.d.kv.Get(rctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)),
			clientv3.WithLimit(int64(limit)), clientv3.WithRev(s.rev))
		cancel()
		if err != nil {
			b.loading = false
			return err
		}
		now := s.d.cfg.Now()
		entries := make([]entry, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			st, err := decodeReady(string(kv.Key), kv.Value)
			if err != nil {
				// Never let one bad key stop a queue: skip it.
				s.d.cfg.Logger.Warn("scheduler: skipping a malformed ready entry", "key", string(kv.Key), "err", err)
				s.d.mu.Lock()
				s.d.stats.Malformed++
				s.d.mu.Unlock()
				continue
			}
			entries = append(entries, entry{key: string(kv.Key), modRev: kv.ModRevision, st: st, seen: now})
		}
		if extend {
			b.extended(entries, resp.More, s.d.cfg.Window)
		} else {
			b.reload(entries, resp.More)
		}
		s.m.dirty = true
	}
	return nil
}

// apply updates the matcher from one watch response and passes orphans
// and delay entries to the maintainer.
func (s *schedLoop) apply(evs []*clientv3.Event) {
	runDeleted := map[string]int64{}
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE {
			if id, ok := strings.CutPrefix(string(ev.Kv.Key), prefixRun); ok {
				runDeleted[id] = ev.Kv.ModRevision
			}
		}
	}
	now := s.d.cfg.Now()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		s.rev = max(s.rev, ev.Kv.ModRevision)
		put := ev.Type == mvccpb.PUT
		switch {
		case strings.HasPrefix(key, prefixReady):
			e, err := parseReadyKey(key)
			if err != nil {
				continue
			}
			if !put {
				s.m.removeEntry(e.Queue, key)
				continue
			}
			if st, err := decodeReady(key, ev.Kv.Value); err == nil {
				s.m.putEntry(e.Queue, entry{key: key, modRev: ev.Kv.ModRevision, st: st, seen: now})
			}
		case strings.HasPrefix(key, prefixWait):
			if put {
				s.putWait(key, ev.Kv.Value, ev.Kv.ModRevision)
			} else {
				s.m.removeWaiter(key)
			}
		case strings.HasPrefix(key, prefixPause):
			s.m.setPaused(key[len(prefixPause):], put)
		case strings.HasPrefix(key, prefixDelay) && put:
			if due, _, err := parseDelayKey(key); err == nil {
				select {
				case s.hints <- due:
				default: // the maintainer looks at the delay index when it promotes
				}
			}
		case strings.HasPrefix(key, prefixClaim) && !put:
			id := key[len(prefixClaim):]
			if runDeleted[id] == ev.Kv.ModRevision {
				continue // answered or returned in the same transaction
			}
			select {
			case s.orphans <- id:
			default: // the periodic sweep finds it
			}
		}
	}
}

// putWait records a wait key's value: a waiter, or an assignment (the
// waiter is then no longer waiting).
func (s *schedLoop) putWait(key string, value []byte, modRev int64) {
	lease, _, err := parseWaitKey(key)
	if err != nil {
		return
	}
	rec, err := decodeWait(value)
	if err != nil || rec.Task != "" {
		s.m.removeWaiter(key)
		return
	}
	s.m.addWaiter(key, modRev, lease, rec)
}

// launch starts the claim transaction of one assignment.
func (s *schedLoop) launch(ctx context.Context, a assignment) {
	s.inflight++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		actx, cancel := context.WithTimeout(ctx, claimTimeout)
		defer cancel()
		s.results <- s.d.store.assign(actx, a, s.ld)
	}()
}

// handle applies the outcome of an assignment; it reports whether the
// scheduler was deposed.
func (s *schedLoop) handle(ctx context.Context, r result) bool {
	d := s.d
	switch {
	case r.deposed:
		return true
	case r.err != nil:
		// etcd did not answer: the watch shows whether it applied; try
		// again shortly.
		s.m.done(r.a, false, false, false)
		if s.retry == nil {
			s.retry = d.cfg.Clock.NewTimer(100 * time.Millisecond)
		}
		if ctx.Err() == nil && !errors.Is(r.err, context.Canceled) {
			d.cfg.Logger.Warn("scheduler: assignment failed", "err", r.err)
		}
		return false
	case !r.ok:
		d.mu.Lock()
		d.stats.Conflicts++
		d.mu.Unlock()
		d.cfg.Observer.ClaimConflict(r.a.e.st.Queue)
		s.m.done(r.a, false, r.staleEntry || r.zombie, r.staleWtr)
		if r.zombie {
			d.cfg.Logger.Warn("dropping ready entry of a claimed task", "key", r.a.e.key)
			_ = d.store.dropZombie(ctx, r.a.e.key, r.a.e.modRev)
		}
		return false
	}
	d.mu.Lock()
	d.stats.Assigned++
	d.mu.Unlock()
	s.m.done(r.a, true, false, false)
	return false
}

// assign writes one assignment: the claim of entry a.e for waiter a.w, in
// one transaction that compares the entry's, the wait key's and the
// scheduler's election key's revisions. The claim key is bound to the
// waiter's lease and the waiter learns of it from its wait key.
func (s *Store) assign(ctx context.Context, a assignment, ld leadership) result {
	r := result{a: a}
	e, err := parseReadyKey(a.e.key)
	if err != nil {
		r.staleEntry = true
		return r
	}
	h := Holder{Worker: a.w.rec.Holder, Session: a.w.rec.Session, Lease: a.w.lease}
	st := s.claimStatus(a.e.st, h, a.w.key)
	ops := claimOps(a.e.key, e.ID, st, clientv3.OpPut(a.w.key, waitRecord{Task: e.ID}.encode(), clientv3.WithIgnoreLease()))
	resp, err := s.kv.Txn(ctx).
		If(
			clientv3.Compare(clientv3.ModRevision(a.e.key), "=", a.e.modRev),
			clientv3.Compare(clientv3.ModRevision(a.w.key), "=", a.w.modRev),
			clientv3.Compare(clientv3.CreateRevision(claimKey(e.ID)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(ld.key), "=", ld.rev),
		).
		Then(ops...).
		Else(
			clientv3.OpGet(a.e.key, clientv3.WithKeysOnly()),
			clientv3.OpGet(a.w.key, clientv3.WithKeysOnly()),
			clientv3.OpGet(ld.key, clientv3.WithKeysOnly()),
		).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			r.staleEntry = true
		}
		r.err = err
		return r
	}
	if resp.Succeeded {
		r.ok = true
		return r
	}
	ek := resp.Responses[0].GetResponseRange().Kvs
	wk := resp.Responses[1].GetResponseRange().Kvs
	lk := resp.Responses[2].GetResponseRange().Kvs
	r.deposed = len(lk) == 0 || lk[0].CreateRevision != ld.rev
	r.staleEntry = len(ek) == 0 || ek[0].ModRevision != a.e.modRev
	r.staleWtr = len(wk) == 0 || wk[0].ModRevision != a.w.modRev
	r.zombie = !r.staleEntry && !r.staleWtr && !r.deposed
	return r
}
