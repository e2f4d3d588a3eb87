package chaos

// tally fills res with the figures of the run: final states, requeues,
// retries, duplicate executions, refused answers, stale writes, lock
// holdings and config deliveries.
func (r *run) tally(res *Result, h History) {
	for _, id := range h.Submitted {
		res.Final[h.Final[id]]++
	}
	last := map[string]string{}
	for _, e := range r.states {
		if e.state == "PENDING" && last[e.task] == "CLAIMED" {
			res.Requeues++
		}
		if e.state == "FAILED" {
			res.Retries++
		}
		last[e.task] = e.state
	}
	// A duplicate execution is work done under a claim that was then lost
	// while another claim of the task also did work; attempts that failed
	// on purpose are retries, not duplicates.
	failed := map[string]map[int64]bool{}
	for _, op := range h.Ops {
		if op.Kind == OpFail && op.Outcome == OK {
			if failed[op.Task] == nil {
				failed[op.Task] = map[int64]bool{}
			}
			failed[op.Task][op.Token] = true
		}
	}
	outputs := map[string]map[int64]bool{}
	for _, w := range h.Writes {
		if w.Kind == "output" && !failed[w.Task][w.Token] {
			if outputs[w.Task] == nil {
				outputs[w.Task] = map[int64]bool{}
			}
			outputs[w.Task][w.Token] = true
		}
		if !w.Accepted {
			res.StaleWrites++
		}
	}
	for _, toks := range outputs {
		res.Duplicates += len(toks) - 1
	}
	for _, op := range h.Ops {
		if op.Kind == OpComplete && op.Outcome == Rejected {
			res.Refused++
		}
	}
	res.Ops = len(h.Ops)
	res.LockHolds = len(h.Locks)
	for _, l := range h.Locks {
		if l.Lost {
			res.LockLost++
		}
	}
	res.ConfigDeliveries = len(h.Config)
}
