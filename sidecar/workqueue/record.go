package workqueue

import (
	"encoding/json"
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
// value of state/<id>, of the task's index entry (ready or delay) and of its
// claim key, so every transaction that moves a task can write the next
// record without reading the previous one.
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

// spec is the immutable record of a task, the value of task/<id>.
type spec struct {
	ID          string          `json:"id"`
	Queue       string          `json:"queue"`
	Payload     json.RawMessage `json:"payload"`
	Priority    int32           `json:"priority,omitempty"`
	MaxAttempts int32           `json:"max_attempts"`
	TimeoutMS   int64           `json:"timeout_ms"`
	Batch       string          `json:"batch,omitempty"`
	NotBeforeMS int64           `json:"not_before_ms,omitempty"`
	Traceparent string          `json:"traceparent,omitempty"`
	CreatedMS   int64           `json:"created_ms"`
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
