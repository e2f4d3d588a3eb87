package chaos

import "time"

// Outcome is what a worker learned from a call.
type Outcome string

// Outcomes of Complete and Fail. Unknown means the call failed in a way
// that does not say whether it took effect (the sidecar died or etcd was
// away mid-call): the checker allows both.
const (
	OK       Outcome = "ok"
	Rejected Outcome = "rejected" // FAILED_PRECONDITION: the claim was lost
	Unknown  Outcome = "unknown"
)

// Op kinds recorded by workers.
const (
	OpClaim    = "claim"
	OpComplete = "complete"
	OpFail     = "fail"
	// OpHeartbeat is recorded but only constrains the model when accepted.
	OpHeartbeat = "heartbeat"
	// OpRelease gives a claim back (the worker honours a cancel request).
	OpRelease = "release"
)

// Op is one call a worker made about a task, with the wall-clock times
// (Unix ns) before the call and after its answer. Workers and the harness
// run on one machine and read the same clock.
type Op struct {
	Worker  string  `json:"worker"`
	Kind    string  `json:"op"`
	Task    string  `json:"task"`
	Token   int64   `json:"token"`
	Attempt int32   `json:"attempt,omitempty"`
	Call    int64   `json:"call"`
	Return  int64   `json:"ret"`
	Outcome Outcome `json:"outcome,omitempty"`

	// A line of a worker carries an Op, or one of these instead.
	Lock   *LockHold   `json:"lock,omitempty"`
	Config *ConfigSeen `json:"config,omitempty"`
}

// Write is one request the fenced store answered.
type Write struct {
	Task     string
	Token    int64
	Kind     string // "begin" (a worker starts on a claim), "output", or "lock" (a lock holder's write; Task is "lock:<name>")
	Worker   string
	Accepted bool
	At       time.Time
}

// LockHold is one holding of a lock as its holder saw it: from the moment
// Lock returned (Acquired) to the moment the holder called Unlock
// (Released). Lost is set when the holder's process was killed or its
// sidecar lost its lease while holding: its end is then unknown.
type LockHold struct {
	Name     string
	Holder   string
	Token    int64
	Acquired time.Time
	Released time.Time
	Lost     bool
}

// ConfigSeen is one document revision a config watcher received, in the
// order it received them.
type ConfigSeen struct {
	Watcher  string
	Name     string
	Revision int64
	At       time.Time
}

// History is everything a run recorded, the input of Check.
type History struct {
	// Submitted lists every task id the harness submitted successfully.
	Submitted []string
	// Cancelled lists the tasks whose Cancel answered CANCELLED at once.
	Cancelled []string
	// Final is each task's state read from etcd after the run ("" when
	// the task does not exist).
	Final  map[string]string
	Ops    []Op
	Writes []Write
	Locks  []LockHold
	Config []ConfigSeen
	// ConfigFinal is the revision of the harness's last config write;
	// ConfigLive the watchers (workers) alive at the end, each of which
	// must have reached it.
	ConfigFinal int64
	ConfigLive  []string
}
