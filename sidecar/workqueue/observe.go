package workqueue

import "time"

// Reason says why a claim ended without a Complete, or why a task went back
// to its queue. The values are metric label values and span attributes, so
// the set is closed.
type Reason string

// The reasons.
const (
	ReasonError          Reason = "error"           // the worker called Fail
	ReasonSessionClosed  Reason = "session_closed"  // the worker's session closed while it held the task
	ReasonTimeout        Reason = "timeout"         // no heartbeat within the task's timeout
	ReasonLeaseExpired   Reason = "lease_expired"   // the holding sidecar's lease expired
	ReasonReleased       Reason = "released"        // the worker called Release
	ReasonShutdown       Reason = "shutdown"        // the sidecar shut down and gave the claim back
	ReasonUnknownOutcome Reason = "unknown_outcome" // a claim whose transaction's answer was lost, given back
)

// Reasons lists every Reason.
var Reasons = []Reason{ReasonError, ReasonSessionClosed, ReasonTimeout, ReasonLeaseExpired, ReasonReleased, ReasonShutdown, ReasonUnknownOutcome}

// FailReasons lists the reasons that count as a failed attempt.
var FailReasons = []Reason{ReasonError, ReasonSessionClosed, ReasonTimeout, ReasonLeaseExpired}

// countsAttempt reports whether r is a failed attempt.
func (r Reason) countsAttempt() bool {
	switch r {
	case ReasonError, ReasonSessionClosed, ReasonTimeout, ReasonLeaseExpired:
		return true
	}
	return false
}

// Outcome is how a claim held by this sidecar ended.
type Outcome string

// The outcomes.
const (
	OutcomeCompleted Outcome = "completed" // Complete accepted
	OutcomeFailed    Outcome = "failed"    // Fail accepted
	OutcomeReleased  Outcome = "released"  // given back without using an attempt (Release, shutdown)
	OutcomeLost      Outcome = "lost"      // ended without an accepted answer (session closed, timeout, lease lost, stale answer)
)

// Outcomes lists every Outcome.
var Outcomes = []Outcome{OutcomeCompleted, OutcomeFailed, OutcomeReleased, OutcomeLost}

// Observer is told what a Dispatcher does, for metrics (package
// sidecar/telemetry implements it). Methods are called synchronously from
// request paths and the dispatcher's goroutines, possibly concurrently;
// they must be quick and must not block or call back into the dispatcher.
// Task ids are never passed: metrics must not be labelled by them.
type Observer interface {
	// TaskClaimed: this sidecar claimed a task of queue; waited is how
	// long the task had been ready (PENDING and due) before.
	TaskClaimed(queue string, waited time.Duration)
	// ClaimConflict: a claim transaction of this sidecar lost to another
	// claimer.
	ClaimConflict(queue string)
	// TaskCompleted: a Complete was accepted through this sidecar.
	TaskCompleted(queue string)
	// TaskFailed: an attempt failed, for a reason that counts the attempt
	// (one of FailReasons), and this sidecar recorded it.
	TaskFailed(queue string, reason Reason)
	// TaskRequeued: this sidecar put a task back to wait for another
	// attempt (PENDING, or FAILED until its backoff passes).
	TaskRequeued(queue string, reason Reason)
	// TaskDead: this sidecar recorded a task's last attempt failing (or a
	// permanent failure): the task is DEAD.
	TaskDead(queue string)
	// ClaimEnded: a claim this sidecar made ended, held for held.
	ClaimEnded(queue string, outcome Outcome, held time.Duration)
	// QueueDepth: a periodic sample (Config.DepthInterval) of the number
	// of tasks of queue that are ready, delayed (backoff or not_before)
	// and claimed, read in one etcd transaction.
	QueueDepth(queue string, pending, delayed, claimed int64)
}

type nopObserver struct{}

func (nopObserver) TaskClaimed(string, time.Duration)         {}
func (nopObserver) ClaimConflict(string)                      {}
func (nopObserver) TaskCompleted(string)                      {}
func (nopObserver) TaskFailed(string, Reason)                 {}
func (nopObserver) TaskRequeued(string, Reason)               {}
func (nopObserver) TaskDead(string)                           {}
func (nopObserver) ClaimEnded(string, Outcome, time.Duration) {}
func (nopObserver) QueueDepth(string, int64, int64, int64)    {}

// ended reports to the observer what became of a task whose attempt or
// claim ended for reason, leaving it in state.
func (d *Dispatcher) ended(queue string, reason Reason, state State) {
	o := d.cfg.Observer
	if reason.countsAttempt() {
		o.TaskFailed(queue, reason)
	}
	switch state {
	case StatePending, StateFailed:
		o.TaskRequeued(queue, reason)
	case StateDead:
		o.TaskDead(queue)
	}
}
