package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// What an operator reads about tasks, queues and batches: one task (Get),
// lists, per-queue depth, a batch's progress, the paused queues. Reads
// change nothing and write no audit record.

// TaskInfo is everything stored about one task.
type TaskInfo struct {
	ID          string          `json:"id"`
	Status      Status          `json:"status"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	CreatedMS   int64           `json:"created_ms,omitempty"`
	NotBeforeMS int64           `json:"not_before_ms,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	LastError   *ErrorRecord    `json:"last_error,omitempty"`
	// Token is the fencing token of the live claim, 0 when not claimed.
	Token int64 `json:"token,omitempty"`
	// Cancelling: an operator asked to cancel the claimed task and its
	// worker has not answered yet.
	Cancelling bool `json:"cancelling,omitempty"`
}

// Get reads one task: its spec, status, result, last error and live claim.
func (s *Store) Get(ctx context.Context, id string) (*TaskInfo, error) {
	if err := ValidateID(id); err != nil {
		return nil, &InvalidError{Field: "id", Err: err}
	}
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(taskKey(id)),
		clientv3.OpGet(stateKey(id)),
		clientv3.OpGet(resultKey(id)),
		clientv3.OpGet(errorKey(id)),
		clientv3.OpGet(claimKey(id), clientv3.WithKeysOnly()),
		clientv3.OpGet(cancelKey(id), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, err
	}
	kv := func(i int) []byte {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) == 1 {
			return kvs[0].Value
		}
		return nil
	}
	stRaw, specRaw := kv(1), kv(0)
	if stRaw == nil && specRaw == nil {
		return nil, ErrNotFound
	}
	info := &TaskInfo{ID: id}
	var sp spec
	if specRaw != nil {
		if sp, err = decodeSpec(specRaw); err != nil {
			return nil, fmt.Errorf("task %s: bad spec: %w", id, err)
		}
		info.Payload, info.CreatedMS, info.NotBeforeMS = sp.Payload, sp.CreatedMS(), sp.NotBeforeMS
	}
	if stRaw == nil {
		// Submitted ready and not moved since (see statuses.go).
		info.Status = pendingStatus(id, sp)
	} else if info.Status, err = decodeStatus(stRaw); err != nil {
		return nil, fmt.Errorf("task %s: bad status: %w", id, err)
	}
	if raw := kv(2); raw != nil {
		info.Result = raw
	}
	if raw := kv(3); raw != nil {
		var e ErrorRecord
		if json.Unmarshal(raw, &e) == nil {
			info.LastError = &e
		}
	}
	if kvs := resp.Responses[4].GetResponseRange().Kvs; len(kvs) == 1 {
		info.Token = kvs[0].CreateRevision
	}
	info.Cancelling = len(resp.Responses[5].GetResponseRange().Kvs) == 1
	return info, nil
}

// ListFilter selects tasks for List. Empty fields match everything.
type ListFilter struct {
	Queue string
	State State
	Batch string
	// Limit is the most tasks returned; 0 means 1000.
	Limit int
}

// List returns the tasks matching f, and whether more matched than Limit.
// With a Batch it reads only that batch's tasks, in the order BatchIDs
// gives; otherwise it pages through every task's status by id.
func (s *Store) List(ctx context.Context, f ListFilter) ([]TaskInfo, bool, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	var out []TaskInfo
	match := func(id string, st Status) bool {
		if f.Queue != "" && st.Queue != f.Queue || f.State != "" && st.State != f.State || f.Batch != "" && st.Batch != f.Batch {
			return true
		}
		out = append(out, TaskInfo{ID: id, Status: st})
		return len(out) <= limit
	}
	// Every task has a spec, and every task of a batch a member key: page
	// through the ids (of the batch, or of every task) and read their
	// statuses a page at a time.
	var ids []string
	more := false
	flush := func() error {
		sts, _, err := readStatuses(ctx, s.kv, s.cfg.MaxTxnOps, ids, 0)
		if err != nil {
			return err
		}
		for i, ts := range sts {
			if ts.Found && !match(ids[i], ts.Status) {
				more = true
				return nil
			}
		}
		ids = ids[:0]
		return nil
	}
	var ferr error
	add := func(id string) bool {
		ids = append(ids, id)
		if len(ids) == 500 {
			ferr = flush()
		}
		return ferr == nil && !more
	}
	var err error
	if f.Batch != "" {
		if err := ValidateBatch(f.Batch); err != nil {
			return nil, false, &InvalidError{Field: "batch", Err: err}
		}
		err = s.eachMember(ctx, f.Batch, memberCursor{}, func(c memberCursor) bool { return add(c.ID) })
	} else {
		err = s.scan(ctx, prefixTask, true, func(key string, _ []byte) bool { return add(strings.TrimPrefix(key, prefixTask)) })
	}
	if err == nil && ferr == nil && !more && len(ids) > 0 {
		ferr = flush()
	}
	if err == nil {
		err = ferr
	}
	if len(out) > limit {
		return out[:limit], true, err
	}
	return out, more, err
}

// BatchIDs returns the ids of the tasks of a batch, in the order
// BatchPage lists them.
func (s *Store) BatchIDs(ctx context.Context, batch string) ([]string, error) {
	if err := ValidateBatch(batch); err != nil {
		return nil, &InvalidError{Field: "batch", Err: err}
	}
	var ids []string
	err := s.eachMember(ctx, batch, memberCursor{}, func(c memberCursor) bool {
		ids = append(ids, c.ID)
		return true
	})
	return ids, err
}

// scan pages through the keys under prefix, 500 at a time, calling f until
// it returns false.
func (s *Store) scan(ctx context.Context, prefix string, keysOnly bool, f func(key string, val []byte) bool) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(500)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := s.kv.Get(ctx, from, opts...)
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if !f(string(kv.Key), kv.Value) {
				return nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// QueueStats is the depth of one queue by state.
type QueueStats struct {
	Queue   string `json:"queue"`
	Paused  bool   `json:"paused"`
	Pending int64  `json:"pending"` // ready now
	Delayed int64  `json:"delayed"` // FAILED waiting for a retry, or held back by not_before
	Claimed int64  `json:"claimed"`
	// OldestPendingMS is when the oldest ready task was submitted (Unix
	// ms), 0 when none is ready.
	OldestPendingMS int64 `json:"oldest_pending_ms,omitempty"`
	// Malformed counts the queue's ready entries whose key does not parse
	// (written by hand or by a buggy version): the scheduler skips them,
	// so they are never handed out; see docs/operations.md.
	Malformed int64 `json:"malformed,omitempty"`
}

// Queues returns every queue that has live work or is paused. Ready
// entries are counted from their keys alone (the key names the queue and
// the submit order; a key that does not parse counts as Malformed);
// delayed and claimed entries are few and read whole.
// Finished tasks are not counted (see List).
func (s *Store) Queues(ctx context.Context) ([]QueueStats, error) {
	byName := map[string]*QueueStats{}
	get := func(q string) *QueueStats {
		if byName[q] == nil {
			byName[q] = &QueueStats{Queue: q}
		}
		return byName[q]
	}
	err := s.scan(ctx, prefixReady, true, func(key string, _ []byte) bool {
		e, err := parseReadyKey(key)
		if err != nil {
			q, _, _ := strings.Cut(strings.TrimPrefix(key, prefixReady), "/")
			get(q).Malformed++
			return true
		}
		qs := get(e.Queue)
		qs.Pending++
		if o := e.Order / 1e6; qs.OldestPendingMS == 0 || o < qs.OldestPendingMS {
			qs.OldestPendingMS = o
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, p := range []string{prefixDelay, prefixClaim} {
		err := s.scan(ctx, p, false, func(_ string, val []byte) bool {
			if st, err := decodeStatus(val); err == nil {
				if p == prefixDelay {
					get(st.Queue).Delayed++
				} else {
					get(st.Queue).Claimed++
				}
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	err = s.scan(ctx, prefixPause, true, func(key string, _ []byte) bool {
		get(strings.TrimPrefix(key, prefixPause)).Paused = true
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]QueueStats, 0, len(byName))
	for _, qs := range byName {
		out = append(out, *qs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	return out, nil
}

// BatchCounts is how many of a batch's tasks are in each state.
type BatchCounts struct {
	Total  int           `json:"total"`
	States map[State]int `json:"states"`
}

// StateRemoved counts, in BatchCounts, a member of a batch whose status is
// gone (removed after its retention period).
const StateRemoved State = "REMOVED"

// Finished returns how many tasks are DONE, DEAD, CANCELLED or removed.
func (b BatchCounts) Finished() int {
	return b.States[StateDone] + b.States[StateDead] + b.States[StateCancelled] + b.States[StateRemoved]
}

// BatchWatch follows a batch: it reads the states of its tasks and then
// calls f with the counts after every change, driven by a watch on state/,
// until f returns false, the batch is finished or ctx ends. It returns the
// last counts. Tasks added to the batch after the first read are not
// followed.
func (s *Store) BatchWatch(ctx context.Context, w clientv3.Watcher, batch string, f func(BatchCounts) bool) (BatchCounts, error) {
	ids, err := s.BatchIDs(ctx, batch)
	if err != nil {
		return BatchCounts{}, err
	}
	states := make(map[string]State, len(ids))
	sts, rev, err := readStatuses(ctx, s.kv, s.cfg.MaxTxnOps, ids, 0)
	if err != nil {
		return BatchCounts{}, err
	}
	for i, id := range ids {
		states[id] = StateRemoved // unless its status is found
		if sts[i].Found {
			states[id] = sts[i].Status.State
		}
	}
	count := func() BatchCounts {
		c := BatchCounts{Total: len(states), States: map[State]int{}}
		for _, st := range states {
			c.States[st]++
		}
		return c
	}
	c := count()
	if !f(c) || c.Finished() == c.Total {
		return c, nil
	}
	// Watch from the revision of the read. A task that had no state/<id>
	// (pending, never moved) has one from its first change on.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range w.Watch(wctx, prefixState, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return c, err
		}
		changed := false
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), prefixState)
			if _, ok := states[id]; !ok || ev.Kv.Value == nil {
				continue
			}
			if st, err := decodeStatus(ev.Kv.Value); err == nil && st.State != states[id] {
				states[id] = st.State
				changed = true
			}
		}
		if !changed {
			continue
		}
		c = count()
		if !f(c) || c.Finished() == c.Total {
			return c, nil
		}
	}
	return c, ctx.Err()
}

// Paused reports the paused queues (for tests and tools).
func (s *Store) Paused(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := s.scan(ctx, prefixPause, false, func(key string, val []byte) bool {
		n, _ := strconv.ParseInt(string(val), 10, 64)
		out[strings.TrimPrefix(key, prefixPause)] = time.UnixMilli(n)
		return true
	})
	return out, err
}
