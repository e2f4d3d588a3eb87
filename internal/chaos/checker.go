package chaos

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// Violation kinds, one per invariant of DESIGN.md.
const (
	Lost             = "lost"              // a submitted task does not exist at the end
	Stuck            = "stuck"             // a task is not DONE, DEAD or CANCELLED at the end
	DoubleComplete   = "double-complete"   // two Completes accepted for one task
	StaleComplete    = "stale-complete"    // a Complete accepted from a token older than another claim of the task
	PhantomDone      = "phantom-done"      // DONE without any Complete that could have been accepted
	StaleWrite       = "stale-write"       // the fenced store accepted a token older than one it had seen
	WrongOutput      = "wrong-output"      // a DONE task's output is not from the claim whose Complete was accepted
	NotLinearizable  = "not-linearizable"  // the task's claim/complete history has no legal order (porcupine)
	LockOverlap      = "lock-overlap"      // two holders of one lock at once, or tokens not rising
	ConfigBackwards  = "config-backwards"  // a config watcher saw a revision older than one it had seen
	ConfigStale      = "config-stale"      // a watcher alive at the end never saw the last config write
	CancelUndone     = "cancel-undone"     // a task cancelled at once later ended otherwise
	LinearizeUnknown = "linearize-timeout" // porcupine gave up (not counted as a violation)
)

// Violation is one broken invariant.
type Violation struct {
	Kind   string
	Task   string // task id or lock/config name
	Detail string
}

func (v Violation) String() string { return fmt.Sprintf("%s %s: %s", v.Kind, v.Task, v.Detail) }

// Report is the checker's answer.
type Report struct {
	Violations []Violation
	// Undecided lists tasks whose linearizability check timed out.
	Undecided []string
}

// Check proves the invariants over a recorded history. LinearizeTimeout
// bounds porcupine per run (0: 30s).
func Check(h History, linearizeTimeout time.Duration) Report {
	var r Report
	add := func(kind, task, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, Task: task, Detail: fmt.Sprintf(format, args...)})
	}

	// None lost, none stuck.
	for _, id := range h.Submitted {
		switch st := h.Final[id]; st {
		case "":
			add(Lost, id, "submitted but absent at the end")
		case "DONE", "DEAD", "CANCELLED":
		default:
			add(Stuck, id, "ends in state %s", st)
		}
	}

	for _, id := range h.Cancelled {
		if st := h.Final[id]; st != "CANCELLED" {
			add(CancelUndone, id, "Cancel answered CANCELLED but the task ends %s", st)
		}
	}

	// Completes: at most one accepted, and only from the newest claim.
	byTask := map[string][]Op{}
	for _, op := range h.Ops {
		byTask[op.Task] = append(byTask[op.Task], op)
	}
	okComplete := map[string]Op{}
	for _, id := range sortedKeys(byTask) {
		ops := byTask[id]
		var maxClaim int64
		var accepted []Op
		maybe := 0
		for _, op := range ops {
			if op.Kind == OpClaim && op.Token > maxClaim {
				maxClaim = op.Token
			}
			if op.Kind == OpComplete {
				switch op.Outcome {
				case OK:
					accepted = append(accepted, op)
				case Unknown:
					maybe++
				}
			}
		}
		if len(accepted) > 1 {
			add(DoubleComplete, id, "%d Completes accepted (tokens %d and %d, workers %s and %s)",
				len(accepted), accepted[0].Token, accepted[1].Token, accepted[0].Worker, accepted[1].Worker)
		}
		for _, c := range accepted {
			if c.Token < maxClaim {
				add(StaleComplete, id, "Complete from token %d (worker %s) accepted, but the task was also claimed with token %d", c.Token, c.Worker, maxClaim)
			}
		}
		if len(accepted) > 0 {
			okComplete[id] = accepted[0]
		}
		if h.Final[id] == "DONE" && len(accepted) == 0 && maybe == 0 {
			add(PhantomDone, id, "DONE but no Complete was accepted or left unanswered")
		}
	}

	// The fenced store: replay in order.
	highest := map[string]int64{}
	lastOutput := map[string]Write{}
	for _, w := range h.Writes {
		if w.Accepted {
			if w.Token < highest[w.Task] {
				add(StaleWrite, w.Task, "%s from token %d (worker %s) accepted after token %d", w.Kind, w.Token, w.Worker, highest[w.Task])
			}
			if w.Kind == "output" {
				lastOutput[w.Task] = w
			}
		}
		if w.Token > highest[w.Task] {
			highest[w.Task] = w.Token
		}
	}
	for id, c := range okComplete {
		if w, ok := lastOutput[id]; !ok || w.Token != c.Token {
			add(WrongOutput, id, "Complete accepted from token %d but the stored output is from token %d", c.Token, w.Token)
		}
	}

	r.Violations = append(r.Violations, checkLocks(h.Locks)...)
	r.Violations = append(r.Violations, checkConfig(h.Config)...)
	r.Violations = append(r.Violations, checkConfigFinal(h)...)

	// Linearizability of each task's claim/complete/fail history.
	if linearizeTimeout == 0 {
		linearizeTimeout = 30 * time.Second
	}
	for _, id := range sortedKeys(byTask) {
		res := porcupine.CheckOperationsTimeout(taskModel, taskOperations(id, byTask[id], h.Final[id]), linearizeTimeout)
		switch res {
		case porcupine.Illegal:
			add(NotLinearizable, id, "no order of its %d calls agrees with one claim at a time and one accepted Complete", len(byTask[id]))
		case porcupine.Unknown:
			r.Undecided = append(r.Undecided, id)
		}
	}
	sort.SliceStable(r.Violations, func(i, j int) bool { return r.Violations[i].Kind < r.Violations[j].Kind })
	return r
}

// checkLocks: per lock, fencing tokens rise in the order holders got the
// lock, and a holder that released normally did so before the next holder
// got it. Holders whose end is unknown (Lost) are protected by fencing, not
// by the lock, so only their start is checked.
func checkLocks(holds []LockHold) []Violation {
	var out []Violation
	byName := map[string][]LockHold{}
	for _, l := range holds {
		byName[l.Name] = append(byName[l.Name], l)
	}
	for _, name := range sortedKeys(byName) {
		ls := byName[name]
		sort.Slice(ls, func(i, j int) bool { return ls[i].Token < ls[j].Token })
		for i := 1; i < len(ls); i++ {
			prev, cur := ls[i-1], ls[i]
			// A holding lost with its lease may have been answered late
			// (its sidecar paused after etcd granted it, past the lease):
			// its holder then saw it after the next holder's. The sidecar
			// now refuses a grant it learns of past its lock lease's trust
			// window (namedlock, TestLateGrantIsAnsweredLost: the worker
			// gets UNAVAILABLE, the holding is given back), but a grant
			// can still race: the sidecar paused after that check and
			// before its answer reached the socket, or between etcd
			// sending a keepalive answer and the sidecar reading it (the
			// answer then vouches for the lease at the time it is read),
			// or the worker itself paused before it recorded the answer.
			// So the exemption stays: fencing, not the lock, protects that
			// overlap (the fenced-store check).
			if !prev.Lost && !cur.Acquired.After(prev.Acquired) {
				out = append(out, Violation{LockOverlap, name, fmt.Sprintf("token %d (%s) acquired at or before token %d (%s)", cur.Token, cur.Holder, prev.Token, prev.Holder)})
			}
			if !prev.Lost && cur.Acquired.Before(prev.Released) {
				out = append(out, Violation{LockOverlap, name, fmt.Sprintf("%s got token %d %v before %s released token %d", cur.Holder, cur.Token, prev.Released.Sub(cur.Acquired), prev.Holder, prev.Token)})
			}
		}
	}
	return out
}

// checkConfig: every watcher's revisions never go backwards.
func checkConfig(seen []ConfigSeen) []Violation {
	var out []Violation
	last := map[[2]string]int64{}
	for _, s := range seen {
		k := [2]string{s.Watcher, s.Name}
		if s.Revision < last[k] {
			out = append(out, Violation{ConfigBackwards, s.Name, fmt.Sprintf("watcher %s saw revision %d after %d", s.Watcher, s.Revision, last[k])})
		}
		if s.Revision > last[k] {
			last[k] = s.Revision
		}
	}
	return out
}

// checkConfigFinal: every watcher alive at the end reached the revision of
// the last config write.
func checkConfigFinal(h History) []Violation {
	if h.ConfigFinal == 0 {
		return nil
	}
	last := map[string]int64{}
	for _, s := range h.Config {
		last[s.Watcher] = max(last[s.Watcher], s.Revision)
	}
	var out []Violation
	for _, w := range h.ConfigLive {
		if last[w] < h.ConfigFinal {
			out = append(out, Violation{ConfigStale, ConfigName, fmt.Sprintf("watcher %s ends at revision %d; the last write was %d", w, last[w], h.ConfigFinal)})
		}
	}
	return out
}

// The porcupine model of one task. The queue's hidden transitions (a
// lease expiring, a timeout) are not observed, so the model allows a new
// claim at any time while the task is not done, as long as its token is
// larger than every earlier one; it forbids a claim after an accepted
// Complete, a Complete or Fail accepted from anything but the current
// claim, a second accepted Complete, and a final state that disagrees.
type taskState struct {
	done  bool
	token int64
	open  bool // the current claim has not been answered
}

type taskInput struct {
	task    string
	kind    string // claim, complete, fail, final
	token   int64
	outcome Outcome
	final   string
}

var taskModel = (&porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		m := map[string][]porcupine.Operation{}
		for _, op := range h {
			id := op.Input.(taskInput).task
			m[id] = append(m[id], op)
		}
		var out [][]porcupine.Operation
		for _, id := range sortedKeys(m) {
			out = append(out, m[id])
		}
		return out
	},
	Init: func() []any { return []any{taskState{}} },
	Step: func(state, input, _ any) []any {
		s, in := state.(taskState), input.(taskInput)
		current := !s.done && s.open && in.token == s.token
		switch in.kind {
		case OpClaim:
			if s.done || in.token <= s.token {
				return nil
			}
			return []any{taskState{token: in.token, open: true}}
		case OpComplete:
			finished := taskState{done: true, token: s.token}
			switch in.outcome {
			case OK:
				if current {
					return []any{finished}
				}
				return nil
			case Unknown:
				if current {
					return []any{s, finished}
				}
			}
			return []any{s} // rejected: always possible (the lease may have lapsed unseen)
		case OpHeartbeat:
			if in.outcome == OK && !current {
				return nil
			}
			return []any{s}
		case OpFail, OpRelease:
			answered := taskState{token: s.token}
			switch in.outcome {
			case OK:
				if current {
					return []any{answered}
				}
				return nil
			case Unknown:
				if current {
					return []any{s, answered}
				}
			}
			return []any{s}
		default: // final
			if (in.final == "DONE") == s.done {
				return []any{s}
			}
			return nil
		}
	},
	DescribeOperation: func(input, _ any) string {
		in := input.(taskInput)
		return fmt.Sprintf("%s(%s, %d) %s%s", in.kind, in.task, in.token, in.outcome, in.final)
	},
}).ToModel()

func taskOperations(id string, ops []Op, final string) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		ret := op.Return
		if op.Outcome == Unknown || ret == 0 {
			ret = math.MaxInt64 - 2 // may take effect any time after the call
		}
		out = append(out, porcupine.Operation{
			Input: taskInput{task: id, kind: op.Kind, token: op.Token, outcome: op.Outcome},
			Call:  op.Call, Return: ret,
		})
	}
	// The final read happens after everything else.
	out = append(out, porcupine.Operation{
		Input: taskInput{task: id, kind: "final", final: final},
		Call:  math.MaxInt64 - 1, Return: math.MaxInt64,
	})
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
