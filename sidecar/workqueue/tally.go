package workqueue

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Counts is how many tasks are in each state. Delayed counts FAILED tasks
// waiting for their retry and PENDING tasks held back by not_before.
type Counts struct {
	Total     int64 `json:"total"`
	Pending   int64 `json:"pending"`
	Delayed   int64 `json:"delayed"`
	Claimed   int64 `json:"claimed"`
	Done      int64 `json:"done"`
	Dead      int64 `json:"dead"`
	Cancelled int64 `json:"cancelled"`
}

// Finished is how many are DONE, DEAD or CANCELLED.
func (c Counts) Finished() int64 { return c.Done + c.Dead + c.Cancelled }

func (c *Counts) add(st Status, n int64) {
	c.Total += n
	switch st.State {
	case StatePending:
		if strings.HasPrefix(st.Index, prefixDelay) {
			c.Delayed += n
		} else {
			c.Pending += n
		}
	case StateFailed:
		c.Delayed += n
	case StateClaimed:
		c.Claimed += n
	case StateDone:
		c.Done += n
	case StateDead:
		c.Dead += n
	case StateCancelled:
		c.Cancelled += n
	}
}

// Tally keeps in memory how many tasks of each batch and of each queue
// are in each state, so that a page of 1,000 batches costs no etcd read.
// Run builds the counts with one paged read of every task's status at one
// revision (O(tasks), once; again only when its watch falls behind a
// compaction) and then follows the statuses with one watch on state/ and
// task/ whose events carry the previous value: each transition moves one task from
// its old state's count to its new one, O(1) per event. Memory is
// O(batches + queues), not O(tasks).
//
// Run is its only goroutine; the read methods are safe for concurrent use.
type Tally struct {
	kv clientv3.KV
	w  clientv3.Watcher
	// OnChange, when set, is called by Run after each change with the
	// batch ("" for none), queue and id of the task that moved. It must
	// not block.
	OnChange func(batch, queue, id string)
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger

	mu      sync.Mutex
	batches map[string]*Counts // written by Run
	queues  map[string]*Counts // written by Run
	ready   bool               // the first read is complete; written by Run
}

// NewTally returns a tally over kv and w (namespaced); Run fills it.
func NewTally(kv clientv3.KV, w clientv3.Watcher) *Tally {
	return &Tally{kv: kv, w: w, batches: map[string]*Counts{}, queues: map[string]*Counts{}}
}

// Ready reports whether the first read is complete (before it, every count
// is zero).
func (t *Tally) Ready() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ready
}

// Batches returns the counts of every batch with tasks.
func (t *Tally) Batches() map[string]Counts { return t.copyOf(t.batches) }

// Queues returns the counts of every queue with tasks.
func (t *Tally) Queues() map[string]Counts { return t.copyOf(t.queues) }

// Batch returns the counts of one batch; false when it has no tasks.
func (t *Tally) Batch(name string) (Counts, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.batches[name]
	if !ok {
		return Counts{}, false
	}
	return *c, true
}

func (t *Tally) copyOf(m map[string]*Counts) map[string]Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]Counts, len(m))
	for k, c := range m {
		out[k] = *c
	}
	return out
}

// Run reads and then follows the statuses until ctx ends. A failed read or
// watch is retried after a second.
func (t *Tally) Run(ctx context.Context) {
	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		}
		rev, err := t.load(ctx)
		if err == nil {
			err = t.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			log.Info("task counts: the watch fell behind a compaction; reading again")
			retry.Reset(0)
			continue
		}
		log.Warn("task counts: reading or following task statuses failed; retrying", "err", err)
		retry.Reset(time.Second)
	}
}

// load reads every status at one revision and replaces the counts: it
// pages through the task ids (every task has a spec) and reads their
// statuses (statuses.go).
func (t *Tally) load(ctx context.Context) (int64, error) {
	batches, queues := map[string]*Counts{}, map[string]*Counts{}
	end := clientv3.GetPrefixRangeEnd(prefixTask)
	from := prefixTask
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000), clientv3.WithKeysOnly()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := t.kv.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		ids := make([]string, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			ids[i] = strings.TrimPrefix(string(kv.Key), prefixTask)
		}
		sts, _, err := readStatuses(ctx, t.kv, tallyReadOps, ids, rev)
		if err != nil {
			return 0, err
		}
		for _, ts := range sts {
			if ts.Found {
				count(batches, queues, ts.Status, 1)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	t.mu.Lock()
	t.batches, t.queues, t.ready = batches, queues, true
	t.mu.Unlock()
	if t.OnChange != nil {
		t.OnChange("", "", "")
	}
	return rev, nil
}

// tallyReadOps is how many statuses load reads per transaction (etcd's
// default --max-txn-ops is 128).
const tallyReadOps = 128

func count(batches, queues map[string]*Counts, st Status, n int64) {
	for _, kc := range []struct {
		m map[string]*Counts
		k string
	}{{batches, st.Batch}, {queues, st.Queue}} {
		if kc.k == "" {
			continue
		}
		c := kc.m[kc.k]
		if c == nil {
			c = &Counts{}
			kc.m[kc.k] = c
		}
		c.add(st, n)
		if c.Total <= 0 {
			delete(kc.m, kc.k)
		}
	}
}

// follow applies the changes after rev until the watch fails or ctx ends.
// One watch covers state/ and task/ (nothing else sorts between them), so
// the events of a transaction arrive together and in order: a spec created
// without a state (a task submitted ready) counts as PENDING, and the
// first state such a task gets (its claim, or a cancel) moves it from
// there.
func (t *Tally) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range t.w.Watch(wctx, prefixState, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixTask)), clientv3.WithRev(rev+1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			var prev, cur *Status
			var id string
			if tid, ok := strings.CutPrefix(key, prefixTask); ok {
				// A spec is written once, by the submit; a task held back
				// by not_before gets its state in the same transaction.
				if ev.Type != mvccpb.PUT || ev.PrevKv != nil {
					continue
				}
				sp, err := decodeSpec(ev.Kv.Value)
				if err != nil || sp.NotBeforeMS != 0 {
					continue
				}
				st := pendingStatus(tid, sp)
				id, cur = tid, &st
			} else {
				id = strings.TrimPrefix(key, prefixState)
				if ev.PrevKv != nil {
					if st, err := decodeStatus(ev.PrevKv.Value); err == nil {
						prev = &st
					}
				}
				if ev.Type == mvccpb.PUT {
					if st, err := decodeStatus(ev.Kv.Value); err == nil {
						cur = &st
						if ev.PrevKv == nil && st.State != StatePending {
							// The first move of a task submitted ready.
							prev = &Status{State: StatePending, Queue: st.Queue, Batch: st.Batch}
						}
					}
				}
			}
			t.mu.Lock()
			if prev != nil {
				count(t.batches, t.queues, *prev, -1)
			}
			if cur != nil {
				count(t.batches, t.queues, *cur, 1)
			}
			t.mu.Unlock()
			if t.OnChange != nil {
				st := cur
				if st == nil {
					st = prev
				}
				if st != nil {
					t.OnChange(st.Batch, st.Queue, id)
				}
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}
