package workqueue

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
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
// claim. A task submitted with defaults and no routing has an empty value;
// any other is readyFormat and the record's JSON. The format byte makes
// the value unreadable to a sidecar from before D-size6, which read a full
// Status there: such a sidecar skips the entry as malformed instead of
// handing out the task with default settings (D-size7).
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
		return ""
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a readyRecord always marshals
	}
	return readyFormat + string(b)
}

// readyFormat starts every non-empty ready value of this format.
const readyFormat = "2"

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
	case val[0] == '{':
		// A ready entry written before D-size6: the whole Status.
		st, err := decodeStatus(val)
		if err != nil {
			return Status{}, fmt.Errorf("bad ready entry %q: %w", key, err)
		}
		st.State, st.Queue, st.Priority, st.Order, st.Index = StatePending, e.Queue, e.Priority, e.Order, key
		return st, nil
	case string(val[:1]) == readyFormat:
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

// spec is the immutable record of a task, the value of task/<id> (the id
// is the key). It holds what the task's first status is derived from: a
// task submitted ready has no state/<id> until it first leaves its ready
// entry (see pendingStatus), so the spec says where that entry is.
type spec struct {
	Queue    string `json:"q"`
	Priority int32  `json:"r,omitempty"`
	Order    int64  `json:"o"` // position within its priority (Unix ns); its millisecond is when it was created
	routing
	// NotBeforeMS is set when the task was submitted held back (not_before
	// in the future); such a task has a state/<id> from its submit on.
	NotBeforeMS int64           `json:"n,omitempty"`
	Payload     json.RawMessage `json:"p"`
	// The W3C traceparent of the submit: a version-00 one as its 25 bytes
	// in base64 (tc, 34 bytes instead of 55), any other as it is (tp).
	TraceCompact string `json:"tc,omitempty"`
	TraceRaw     string `json:"tp,omitempty"`
}

// setTraceparent stores tp in the spec, in its short form when it has one.
func (sp *spec) setTraceparent(tp string) {
	sp.TraceCompact, sp.TraceRaw = "", tp
	if b, ok := traceparentBytes(tp); ok {
		sp.TraceCompact, sp.TraceRaw = base64.RawStdEncoding.EncodeToString(b), ""
	}
}

// traceparent returns the stored traceparent.
func (sp *spec) traceparent() string {
	if sp.TraceCompact == "" {
		return sp.TraceRaw
	}
	b, err := base64.RawStdEncoding.DecodeString(sp.TraceCompact)
	if err != nil || len(b) != 25 {
		return ""
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:24]) + "-" + hex.EncodeToString(b[24:])
}

// traceparentBytes returns the trace id, span id and flags of a version-00
// traceparent in its canonical (lower-case) form, which traceparent
// restores exactly.
func traceparentBytes(tp string) ([]byte, bool) {
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return nil, false
	}
	h := tp[3:35] + tp[36:52] + tp[53:]
	if strings.ToLower(h) != h {
		return nil, false
	}
	b, err := hex.DecodeString(h)
	return b, err == nil
}

// CreatedMS is when the task was submitted (Unix ms).
func (sp *spec) CreatedMS() int64 { return sp.Order / 1e6 }

// decodeSpec reads a spec of either format: this one, or the one written
// before D-size6 (long field names, the id, created_ms), whose tasks always
// have a state/<id> (D-size7).
func decodeSpec(b []byte) (spec, error) {
	var sp spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return sp, err
	}
	if sp.Queue != "" || sp.Payload != nil {
		return sp, nil
	}
	var old struct {
		Queue       string          `json:"queue"`
		Payload     json.RawMessage `json:"payload"`
		Priority    int32           `json:"priority"`
		MaxAttempts int32           `json:"max_attempts"`
		TimeoutMS   int64           `json:"timeout_ms"`
		Batch       string          `json:"batch"`
		NotBeforeMS int64           `json:"not_before_ms"`
		Traceparent string          `json:"traceparent"`
		CreatedMS   int64           `json:"created_ms"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Queue == "" {
		return sp, err // neither format: the callers' checks report it
	}
	sp = spec{Queue: old.Queue, Priority: old.Priority, Order: old.CreatedMS * 1e6, NotBeforeMS: old.NotBeforeMS, Payload: old.Payload}
	sp.routing = routingOf(Status{MaxAttempts: old.MaxAttempts, TimeoutMS: old.TimeoutMS, Batch: old.Batch})
	sp.setTraceparent(old.Traceparent)
	return sp, nil
}

// pendingStatus is the status of task id while it has no state/<id>: it
// was submitted ready and has not left its ready entry (not claimed, not
// cancelled), so it is PENDING at attempt 0 in the entry its spec names.
func pendingStatus(id string, sp spec) Status {
	st := Status{
		State: StatePending, Queue: sp.Queue, Priority: sp.Priority, Order: sp.Order,
		Index: readyKey(sp.Queue, sp.Priority, sp.Order, id), UpdatedMS: sp.CreatedMS(),
	}
	sp.routing.fill(&st)
	return st
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
