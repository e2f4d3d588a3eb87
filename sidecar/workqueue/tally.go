package workqueue

import (
	"cmp"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
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
// revision (O(tasks), once; again only when its watch ends) and then
// follows the statuses with one watch on state/ and task/ whose events
// carry the previous value (statusFollower): each transition moves one
// task from its old state's count to its new one, O(1) per event. Memory
// is O(batches + queues), not O(tasks).
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
	// Clock times the wait before a failed read or watch is retried.
	// Default: the real clock.
	Clock clockwork.Clock
	// MaxTxnOps is how many statuses a transaction of the read asks for:
	// at most etcd's --max-txn-ops (Config.MaxTxnOps). Default 128.
	MaxTxnOps int

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

// Run reads and then follows the statuses until ctx ends
// (statusFollower): it reads again at once when its watch falls behind a
// compaction, and after a second on Clock when a read or the watch failed.
func (t *Tally) Run(ctx context.Context) {
	log, clock := t.Logger, t.Clock
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	f := statusFollower{w: t.w, clock: clock, log: log, what: "task counts", specs: true,
		retry: time.Second, read: t.load, apply: t.follow}
	_ = f.run(ctx, 0) // only ctx's error: a failed read is retried
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
		sts, _, err := readStatuses(ctx, t.kv, cmp.Or(t.MaxTxnOps, defaultTallyReadOps), ids, rev)
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

// defaultTallyReadOps is Tally.MaxTxnOps's default, etcd's default
// --max-txn-ops.
const defaultTallyReadOps = 128

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

// follow moves each task that changed from its old state's count to its
// new one. A spec created without a state (a task submitted ready) counts
// as PENDING, and the first state such a task gets (its claim, or a
// cancel) moves it from there (statusFollower).
func (t *Tally) follow(changes []statusChange) {
	for _, c := range changes {
		t.mu.Lock()
		if c.Prev != nil {
			count(t.batches, t.queues, *c.Prev, -1)
		}
		if c.Cur != nil {
			count(t.batches, t.queues, *c.Cur, 1)
		}
		t.mu.Unlock()
		if t.OnChange != nil {
			st := c.Cur
			if st == nil {
				st = c.Prev
			}
			if st != nil {
				t.OnChange(st.Batch, st.Queue, c.ID)
			}
		}
	}
}
