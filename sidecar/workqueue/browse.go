package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/batonhq/baton/sidecar/audit"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reads for browsing a large deployment (the operator's web page): each
// costs what one page of the answer costs, never a scan of every task.

// Key prefixes that followers of the work queue watch.
const (
	// StatePrefix holds the Status of every task that has left the ready
	// entry it was submitted into (state/<id>); a task without one is
	// PENDING at attempt 0 (see statuses.go).
	StatePrefix = prefixState
	// PausePrefix holds the paused queues (q/pause/<queue>).
	PausePrefix = prefixPause
)

// TaskPage is one page of a batch's tasks.
type TaskPage struct {
	Tasks []TaskInfo `json:"tasks"`
	// Next is the cursor to pass as after for the next page; empty when
	// the batch has no more members.
	Next string `json:"next,omitempty"`
	// Scanned is how many members were read to fill the page (more than
	// len(Tasks) when filtering by state).
	Scanned int `json:"scanned"`
}

// BatchPage returns up to limit tasks of batch after the cursor after (the
// Next of an earlier page; all when empty), in the order they were
// submitted in (by submit transaction, and by id within one), with their
// status only. With a state it keeps only tasks in that state and reads
// at most scan members (default 20 × limit) before returning a shorter
// page whose Next goes on from where it stopped: a filtered page costs
// O(scan), never the batch.
func (s *Store) BatchPage(ctx context.Context, batch, after string, state State, limit, scan int) (TaskPage, error) {
	if err := ValidateBatch(batch); err != nil {
		return TaskPage{}, &InvalidError{Field: "batch", Err: err}
	}
	from, err := parseMemberCursor(after)
	if err != nil {
		return TaskPage{}, invalid("after", "%v", err)
	}
	if limit <= 0 {
		limit = 50
	}
	if scan < limit {
		scan = 20 * limit
	}
	page := TaskPage{Tasks: []TaskInfo{}}
	for page.Scanned < scan && len(page.Tasks) < limit {
		chunk := min(limit-len(page.Tasks), scan-page.Scanned, 64)
		if state != "" {
			chunk = min(scan-page.Scanned, 64)
		}
		var ids []string
		var curs []memberCursor
		err := s.eachMember(ctx, batch, from, func(c memberCursor) bool {
			ids, curs = append(ids, c.ID), append(curs, c)
			return len(ids) < chunk+1 // one more, to know whether the batch goes on
		})
		if err != nil {
			return TaskPage{}, err
		}
		more := len(ids) > chunk
		if more {
			ids, curs = ids[:chunk], curs[:chunk]
		}
		if len(ids) == 0 {
			page.Next = ""
			return page, nil
		}
		sts, _, err := readStatuses(ctx, s.kv, s.cfg.MaxTxnOps, ids, 0)
		if err != nil {
			return TaskPage{}, err
		}
		for i, ts := range sts {
			page.Scanned++
			from = curs[i]
			page.Next = from.String()
			st := Status{State: StateRemoved, Batch: batch}
			if ts.Found {
				st = ts.Status
			}
			if state == "" || st.State == state {
				page.Tasks = append(page.Tasks, TaskInfo{ID: ids[i], Status: st})
				if len(page.Tasks) == limit {
					break
				}
			}
		}
		if !more && page.Next == curs[len(curs)-1].String() {
			page.Next = ""
			return page, nil
		}
	}
	return page, nil
}

// HistoryEntry is one version of a task's status, read from etcd's
// history of state/<id>.
type HistoryEntry struct {
	// Revision is the etcd revision of the transition. For a CLAIMED
	// entry it is the claim's fencing token (the claim key is created in
	// the same transaction).
	Revision int64  `json:"revision"`
	Status   Status `json:"status"`
	// Error is the error recorded by this transition (a failed attempt),
	// when there is one.
	Error *ErrorRecord `json:"error,omitempty"`
}

// TaskHistory returns up to max earlier and current versions of the
// task's status, newest first, read from etcd's multi-version store: one
// read per version. Versions before the last compaction are gone; Partial
// says the history was cut there (or at max).
func (s *Store) TaskHistory(ctx context.Context, id string, max int) (entries []HistoryEntry, partial bool, err error) {
	if err := ValidateID(id); err != nil {
		return nil, false, &InvalidError{Field: "id", Err: err}
	}
	if max <= 0 {
		max = 50
	}
	var opts []clientv3.OpOption
	for len(entries) < max {
		resp, err := s.kv.Txn(ctx).Then(
			clientv3.OpGet(stateKey(id), opts...),
			clientv3.OpGet(errorKey(id), opts...),
		).Commit()
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return entries, true, nil
			}
			return entries, false, err
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 && opts == nil {
			// No state: the task was submitted ready and has not moved
			// (statuses.go); its one version is the one its spec implies.
			sresp, err := s.kv.Get(ctx, taskKey(id), clientv3.WithRev(resp.Header.Revision))
			if err != nil {
				return nil, false, err
			}
			if len(sresp.Kvs) == 0 {
				return nil, false, ErrNotFound
			}
			sp, err := decodeSpec(sresp.Kvs[0].Value)
			if err != nil {
				return nil, false, fmt.Errorf("task %s: bad spec: %w", id, err)
			}
			return []HistoryEntry{{Revision: sresp.Kvs[0].ModRevision, Status: pendingStatus(id, sp)}}, false, nil
		}
		if len(kvs) == 0 {
			return entries, false, nil
		}
		kv := kvs[0]
		st, err := decodeStatus(kv.Value)
		if err != nil {
			return entries, false, fmt.Errorf("task %s: bad status at revision %d: %w", id, kv.ModRevision, err)
		}
		e := HistoryEntry{Revision: kv.ModRevision, Status: st}
		if ekvs := resp.Responses[1].GetResponseRange().Kvs; len(ekvs) == 1 && ekvs[0].ModRevision == kv.ModRevision {
			var er ErrorRecord
			if json.Unmarshal(ekvs[0].Value, &er) == nil {
				e.Error = &er
			}
		}
		entries = append(entries, e)
		if kv.Version <= 1 || kv.ModRevision <= kv.CreateRevision {
			// The first state. Unless the submit wrote it (a task held
			// back by not_before), the task was PENDING before it, with no
			// state: that version is the one its spec implies.
			if st.State != StatePending && len(entries) < max {
				sresp, err := s.kv.Get(ctx, taskKey(id), clientv3.WithRev(kv.ModRevision))
				if err == nil && len(sresp.Kvs) == 1 && sresp.Kvs[0].ModRevision < kv.ModRevision {
					if sp, err := decodeSpec(sresp.Kvs[0].Value); err == nil {
						entries = append(entries, HistoryEntry{Revision: sresp.Kvs[0].ModRevision, Status: pendingStatus(id, sp)})
					}
				}
			}
			return entries, false, nil
		}
		opts = []clientv3.OpOption{clientv3.WithRev(kv.ModRevision - 1)}
	}
	return entries, true, nil
}

// OldestPending returns when the oldest ready task of queue q was
// submitted (Unix ms; 0 when none is ready). Ready keys sort by priority
// and then by submit order, so it reads the head of each priority level
// present: one read per level, at most maxLevels (default 32); past that
// the answer is the oldest among the levels read.
func (s *Store) OldestPending(ctx context.Context, q string, maxLevels int) (int64, error) {
	if err := ValidateQueue(q); err != nil {
		return 0, &InvalidError{Field: "queue", Err: err}
	}
	if maxLevels <= 0 {
		maxLevels = 32
	}
	p := readyPrefix(q)
	end := clientv3.GetPrefixRangeEnd(p)
	from := p
	var oldest int64
	for range maxLevels {
		resp, err := s.kv.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly())
		if err != nil {
			return 0, err
		}
		if len(resp.Kvs) == 0 {
			break
		}
		k := string(resp.Kvs[0].Key)
		e, err := parseReadyKey(k)
		if err != nil {
			// Skip past the malformed key.
			from = k + "\x00"
			continue
		}
		if o := e.Order / 1e6; oldest == 0 || o < oldest {
			oldest = o
		}
		// The next priority level: past every key of this one.
		from = fmt.Sprintf("%s%04d/", p, MaxPriority-int(e.Priority)+1)
	}
	return oldest, nil
}

// GetPin returns the config document pinned with batch, nil when none is.
func (s *Store) GetPin(ctx context.Context, batch string) (*Pin, error) {
	if err := ValidateBatch(batch); err != nil {
		return nil, &InvalidError{Field: "batch", Err: err}
	}
	resp, err := s.kv.Get(ctx, pinKey(batch))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var p Pin
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return nil, fmt.Errorf("batch %s: bad pin: %w", batch, err)
	}
	return &p, nil
}

// WithAudit returns a copy of the store that records operator actions
// with w (Config.Audit): the web page makes one per request, naming the
// caller.
func (s *Store) WithAudit(w *audit.Writer) *Store {
	c := *s
	c.cfg.Audit = w
	return &c
}
