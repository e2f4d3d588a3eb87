package workqueue

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is where a task is in its lifecycle.
type State string

// The task states. FAILED means waiting for a retry after a backoff.
const (
	StatePending   State = "PENDING"
	StateClaimed   State = "CLAIMED"
	StateFailed    State = "FAILED"
	StateDone      State = "DONE"
	StateDead      State = "DEAD"
	StateCancelled State = "CANCELLED"
)

// Finished reports whether s is an end state.
func (s State) Finished() bool { return s == StateDone || s == StateDead || s == StateCancelled }

// Status is the small, mutable record of a task. The same record is the
// value of state/<id>, of the task's delay entry and of its claim key; its
// ready entry holds the part that the key does not say (readyRecord). Every
// transaction that moves a task can write the next record without reading
// the previous one. A task submitted ready has no state/<id> until it first
// leaves its ready entry: its status is then pendingStatus of its spec.
type Status struct {
	State       State  `json:"state"`
	Queue       string `json:"queue"`
	Priority    int32  `json:"priority,omitempty"`
	Attempt     int32  `json:"attempt"` // attempts used; while CLAIMED, the current one
	MaxAttempts int32  `json:"max_attempts"`
	TimeoutMS   int64  `json:"timeout_ms"`
	Batch       string `json:"batch,omitempty"`
	Pinned      bool   `json:"pinned,omitempty"` // the batch has a pinned config (pin/<batch>)
	Order       int64  `json:"order"`            // position within its priority (Unix ns)
	Index       string `json:"index,omitempty"`  // its ready or delay key while PENDING or FAILED, its gc key when finished
	UpdatedMS   int64  `json:"updated_ms"`

	// Routing: the task's affinity key and the labels a sidecar needs to
	// receive it (Spec.Affinity, Spec.Require). They travel in every
	// record so that the scheduler matches from the ready index alone.
	Affinity string            `json:"affinity,omitempty"`
	Require  map[string]string `json:"require,omitempty"`

	// While CLAIMED.
	Holder     string `json:"holder,omitempty"`  // worker id of the sidecar
	Session    string `json:"session,omitempty"` // worker session, if any
	Lease      int64  `json:"lease,omitempty"`
	DeadlineMS int64  `json:"deadline_ms,omitempty"`
	Wait       string `json:"wait,omitempty"`     // the wait key the task was assigned through (deleted with the claim)
	ReadyMS    int64  `json:"ready_ms,omitempty"` // when the task became PENDING and due, for the dispatch latency

	CancelRequested bool `json:"cancel_requested,omitempty"`
}

// Timeout returns the heartbeat timeout.
func (s Status) Timeout() time.Duration { return time.Duration(s.TimeoutMS) * time.Millisecond }

func (s Status) encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a Status always marshals
	}
	return string(b)
}

func decodeStatus(b []byte) (Status, error) {
	var s Status
	err := json.Unmarshal(b, &s)
	return s, err
}

// The records below are stored once per pending task, so they are kept
// short (docs/performance.md, bytes per task): one- or two-letter field
// names, nothing that the key already says, and the package defaults
// (recordMaxAttempts, recordTimeoutMS) left out. The defaults are
// constants of the stored format, not Config's: a record reads the same in
// every sidecar whatever its Config.

// Values of a record left out because they are the common case.
const (
	recordMaxAttempts = 3
	recordTimeoutMS   = 5 * 60 * 1000
)

// routing is what a task carries in its spec and in its ready entry: what
// matching and the claim need besides the ready key (queue, priority and
// order).
type routing struct {
	MaxAttempts int32             `json:"m,omitempty"` // 0: recordMaxAttempts
	TimeoutMS   int64             `json:"t,omitempty"` // 0: recordTimeoutMS
	Batch       string            `json:"b,omitempty"`
	Pinned      bool              `json:"pn,omitempty"`
	Affinity    string            `json:"a,omitempty"`
	Require     map[string]string `json:"l,omitempty"`
}

func routingOf(st Status) routing {
	r := routing{MaxAttempts: st.MaxAttempts, TimeoutMS: st.TimeoutMS, Batch: st.Batch, Pinned: st.Pinned, Affinity: st.Affinity, Require: st.Require}
	if r.MaxAttempts == recordMaxAttempts {
		r.MaxAttempts = 0
	}
	if r.TimeoutMS == recordTimeoutMS {
		r.TimeoutMS = 0
	}
	return r
}

// fill sets st's routing fields from r.
func (r routing) fill(st *Status) {
	st.MaxAttempts, st.TimeoutMS = r.MaxAttempts, r.TimeoutMS
	if st.MaxAttempts == 0 {
		st.MaxAttempts = recordMaxAttempts
	}
	if st.TimeoutMS == 0 {
		st.TimeoutMS = recordTimeoutMS
	}
	st.Batch, st.Pinned, st.Affinity, st.Require = r.Batch, r.Pinned, r.Affinity, r.Require
}

// readyRecord is the value of a ready entry, q/ready/<queue>/<prio>/<order>/<id>:
// with the key, what the scheduler needs to match the task and to write its
// claim. The value is readyFormat and the record's JSON, or readyFormat
// alone for a task submitted with defaults and no routing. The format
// byte makes the value unreadable to a sidecar of an earlier format: one
// from before D-size6 read a full Status there, and one from before
// D-size9 cannot read the task's spec (it would hand the task out with
// default settings, or mark it DEAD as broken); such a sidecar skips the
// entry as malformed (D-size7, D-size9). That covers the ready entries
// this version writes, not one an old sidecar writes when it promotes a
// delay entry: hence the upgrade's "stop every old sidecar first"
// (docs/operations.md).
type readyRecord struct {
	routing
	Attempt   int32 `json:"n,omitempty"`
	UpdatedMS int64 `json:"u,omitempty"` // 0: the order's millisecond (never moved since submit)
}

// encodeReady returns the ready entry's value for the PENDING status st.
func encodeReady(st Status) string {
	r := readyRecord{routing: routingOf(st), Attempt: st.Attempt, UpdatedMS: st.UpdatedMS}
	if r.UpdatedMS == st.Order/1e6 {
		r.UpdatedMS = 0
	}
	if r.routing.empty() && r.Attempt == 0 && r.UpdatedMS == 0 {
		return readyFormat
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a readyRecord always marshals
	}
	return readyFormat + string(b)
}

// readyFormat starts every ready value of this format. Values of format
// "2" (D-size6: the same record, and an empty value for none) are read as
// well.
const readyFormat = "3"

func (r routing) empty() bool {
	return r.MaxAttempts == 0 && r.TimeoutMS == 0 && r.Batch == "" && !r.Pinned && r.Affinity == "" && len(r.Require) == 0
}

// decodeReady returns the PENDING status of a ready entry: its key must
// parse (parseReadyKey) and its value be a readyRecord.
func decodeReady(key string, val []byte) (Status, error) {
	e, err := parseReadyKey(key)
	if err != nil {
		return Status{}, err
	}
	var r readyRecord
	switch {
	case len(val) == 0:
		// D-size6's value of a task with defaults and no routing.
	case val[0] == '{':
		// A ready entry written before D-size6: the whole Status.
		st, err := decodeStatus(val)
		if err != nil {
			return Status{}, fmt.Errorf("bad ready entry %q: %w", key, err)
		}
		st.State, st.Queue, st.Priority, st.Order, st.Index = StatePending, e.Queue, e.Priority, e.Order, key
		return st, nil
	case string(val) == readyFormat:
		// A task with defaults and no routing.
	case string(val[:1]) == readyFormat || val[0] == '2': // "2": D-size6's, the same record
		if err := json.Unmarshal(val[1:], &r); err != nil {
			return Status{}, fmt.Errorf("bad ready entry %q: %w", key, err)
		}
	default:
		return Status{}, fmt.Errorf("bad ready entry %q: unknown format %q", key, val[:1])
	}
	st := Status{State: StatePending, Queue: e.Queue, Priority: e.Priority, Attempt: r.Attempt, Order: e.Order, Index: key, UpdatedMS: r.UpdatedMS}
	if st.UpdatedMS == 0 {
		st.UpdatedMS = e.Order / 1e6
	}
	r.routing.fill(&st)
	return st, nil
}

// ErrorRecord is the value of error/<id>: the last error of the task.
type ErrorRecord struct {
	Attempt   int32  `json:"attempt"`
	Error     string `json:"error"`
	Permanent bool   `json:"permanent,omitempty"`
	AtMS      int64  `json:"at_ms"`
}

func (e ErrorRecord) encode() string {
	b, _ := json.Marshal(e)
	return string(b)
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// Pin is the value of pin/<batch>: the configuration document a batch was
// submitted with. Every task of the batch is handed out with it.
type Pin struct {
	Name     string          `json:"name"`
	Revision int64           `json:"revision"`
	Document json.RawMessage `json:"document"`
	PinnedMS int64           `json:"pinned_ms"`
}
