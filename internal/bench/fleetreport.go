package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// FleetResult is one size of the fleet sweep: Sidecars in-process
// sidecars, one consumer each. Latencies are in milliseconds.
type FleetResult struct {
	Sidecars int `json:"sidecars"`
	// StartSeconds is how long the fleet took to start (waves of 64).
	StartSeconds float64 `json:"start_seconds"`

	// Dispatch to idle workers: every consumer waits in Next, tasks are
	// submitted one at a time; from the submit's return to Next returning.
	DispatchSamples int     `json:"dispatch_samples"`
	DispatchP50MS   float64 `json:"dispatch_p50_ms"`
	DispatchP99MS   float64 `json:"dispatch_p99_ms"`
	// DispatchConflictsPerTask is Idle.ClaimConflictsPerTask: claim (or
	// assignment) transactions the fleet lost per task dispatched.
	DispatchConflictsPerTask float64 `json:"dispatch_conflicts_per_task"`
	// Idle is the cost per task of the dispatch-to-idle-workers phase.
	Idle PhaseCost `json:"idle"`

	// The backlog: Tasks submitted at once, drained by the consumers.
	Tasks      int `json:"tasks"`
	Delivered  int `json:"delivered"`
	Duplicates int `json:"duplicates"`
	// Seconds from the consumers' start to the last delivery.
	Seconds   float64 `json:"seconds"`
	TasksPerS float64 `json:"tasks_per_s"`
	// ConflictsPerTask is Drain.ClaimConflictsPerTask.
	ConflictsPerTask float64 `json:"conflicts_per_task"`
	// Drain is the cost per task of the backlog phase, submit included.
	Drain PhaseCost `json:"drain"`

	// Unavailable counts Next calls refused as Unavailable (a sidecar
	// between leases) and LostClaims Completes refused because the claim
	// was lost, over both phases; the consumers retry, as workers do.
	// Both are 0 on a machine that keeps up. AmbiguousCompletes counts
	// Completes answered Unavailable and, asked again, refused because the
	// claim was gone: counted as done (errAmbiguousComplete).
	Unavailable        int64 `json:"unavailable"`
	LostClaims         int64 `json:"lost_claims"`
	AmbiguousCompletes int64 `json:"ambiguous_completes"`

	// EtcdWatchers is etcd's count of watchers with the fleet up.
	EtcdWatchers int `json:"etcd_watchers"`
	// BenchRSSMB is the bench process's resident set (the fleet, its
	// consumers and the bench) after the backlog, in MiB.
	BenchRSSMB float64 `json:"bench_rss_mb"`
	Load1      float64 `json:"load1"`
}

// PhaseCost is what one task cost in a phase of a fleet run: the phase's
// totals divided by its tasks. The etcd figures come from etcd's own
// metrics (etcdmetrics.go) and revision, so they count everything etcd did
// meanwhile, lease keepalives and the registry included.
type PhaseCost struct {
	Tasks int `json:"tasks"`
	// TxnsPerTask counts etcd write requests (proposals applied): every
	// Put, Delete and write Txn, whether its compare succeeded or not.
	TxnsPerTask float64 `json:"txns_per_task"`
	// WritesPerTask counts the revisions: the writes that changed
	// something (succeeded).
	WritesPerTask float64 `json:"writes_per_task"`
	// FailedTxnsPerTask is TxnsPerTask - WritesPerTask: write requests that
	// changed nothing, nearly all of them failed compares.
	FailedTxnsPerTask float64 `json:"failed_txns_per_task"`
	// ClaimConflictsPerTask is Baton's own count of lost claim
	// transactions, summed over the fleet (Dispatcher Stats.Conflicts).
	ClaimConflictsPerTask float64 `json:"claim_conflicts_per_task"`
	// KVRequestsPerTask counts every KV call etcd answered, reads included.
	KVRequestsPerTask float64 `json:"kv_requests_per_task"`
	// WatchEventsPerTask counts watch events etcd sent, once per watcher.
	WatchEventsPerTask float64 `json:"watch_events_per_task"`
	// SentBytesPerTask counts the bytes etcd sent to its clients.
	SentBytesPerTask float64 `json:"sent_bytes_per_task"`
	// CPUMSPerTask is the bench process's CPU time: the whole fleet of
	// sidecars and their consumers (the Go clients), in milliseconds.
	CPUMSPerTask float64 `json:"cpu_ms_per_task"`
	// EtcdCPUMSPerTask is the etcd process's CPU time, when the bench
	// started it.
	EtcdCPUMSPerTask *float64 `json:"etcd_cpu_ms_per_task,omitempty"`
}

// AffinityResult is the affinity run: Tasks tasks over Speakers speakers
// drained by Sidecars sidecars with one consumer each, once with the
// speaker as the tasks' affinity key and once without.
type AffinityResult struct {
	Sidecars int `json:"sidecars"`
	Speakers int `json:"speakers"`
	Tasks    int `json:"tasks"`
	// HitShare is the share of tasks (each consumer's first excepted)
	// whose speaker was that of the consumer's previous task.
	HitShare float64 `json:"hit_share"`
	// HitShareWithout is the same without affinity keys: chance.
	HitShareWithout  float64 `json:"hit_share_without_keys"`
	TasksPerS        float64 `json:"tasks_per_s"`
	TasksPerSWithout float64 `json:"tasks_per_s_without_keys"`
	// ThroughputRatio is TasksPerS / TasksPerSWithout.
	ThroughputRatio float64   `json:"throughput_ratio"`
	Cost            PhaseCost `json:"cost"`
	CostWithout     PhaseCost `json:"cost_without_keys"`
	Load1           float64   `json:"load1"`
}

// Where issue 12 sets its fleet targets.
const (
	fleetTargetSmall = 8
	fleetTargetLarge = 256
)

// fleetEnds returns the results the fleet targets compare: 8 and 256
// sidecars when measured, else the smallest and largest fleet measured.
func (r *Report) fleetEnds() (small, large FleetResult, ok bool) {
	if len(r.Fleet) == 0 {
		return small, large, false
	}
	small, large = r.Fleet[0], r.Fleet[0]
	for _, f := range r.Fleet {
		if f.Sidecars < small.Sidecars {
			small = f
		}
		if f.Sidecars > large.Sidecars {
			large = f
		}
	}
	for _, f := range r.Fleet {
		switch f.Sidecars {
		case fleetTargetSmall:
			small = f
		case fleetTargetLarge:
			large = f
		}
	}
	return small, large, true
}

// fleetTargets checks the targets of issue 12 that this run measured,
// each against figures of this run.
func (r *Report) fleetTargets() []Target {
	var ts []Target
	small, large, ok := r.fleetEnds()
	if ok && small.Sidecars != large.Sidecars {
		vs := fmt.Sprintf(" at %d vs %d sidecars", large.Sidecars, small.Sidecars)
		f := large.TasksPerS / small.TasksPerS
		ts = append(ts, Target{"tasks/s" + vs, "≥ 1.00×", fmt.Sprintf("%.2f× (%.0f vs %.0f)", f, large.TasksPerS, small.TasksPerS), f >= 1})
		flat := func(what string, a, b float64) {
			if a <= 0 {
				return
			}
			f := b / a
			ts = append(ts, Target{what + vs, "≤ 1.20× (within 20%)", fmt.Sprintf("%.2f× (%.2f vs %.2f)", f, b, a), f <= 1.2})
		}
		flat("etcd txns/task, backlog,", small.Drain.TxnsPerTask, large.Drain.TxnsPerTask)
		flat("etcd txns/task, idle workers,", small.Idle.TxnsPerTask, large.Idle.TxnsPerTask)
		flat("watch events/task, backlog,", small.Drain.WatchEventsPerTask, large.Drain.WatchEventsPerTask)
		flat("watch events/task, idle workers,", small.Idle.WatchEventsPerTask, large.Idle.WatchEventsPerTask)
	}
	if ok {
		at := fmt.Sprintf(" at %d idle sidecars", large.Sidecars)
		ts = append(ts,
			Target{"dispatch conflicts/task" + at, "≤ 0.05", fmt.Sprintf("%.3f", large.DispatchConflictsPerTask), large.DispatchConflictsPerTask <= 0.05},
			Target{"dispatch p50" + at, "≤ 5 ms", fmt.Sprintf("%.2f ms", large.DispatchP50MS), large.DispatchP50MS <= 5},
			Target{"dispatch p99" + at, "≤ 25 ms", fmt.Sprintf("%.2f ms", large.DispatchP99MS), large.DispatchP99MS <= 25},
		)
	}
	if a := r.Affinity; a != nil {
		of := fmt.Sprintf(" (%d speakers, %d workers)", a.Speakers, a.Sidecars)
		ts = append(ts,
			Target{"affinity hit share" + of, "≥ 0.80", fmt.Sprintf("%.3f (without keys %.3f)", a.HitShare, a.HitShareWithout), a.HitShare >= 0.8},
			Target{"tasks/s with affinity keys vs without" + of, "≥ 0.90×", fmt.Sprintf("%.2f× (%.0f vs %.0f)", a.ThroughputRatio, a.TasksPerS, a.TasksPerSWithout), a.ThroughputRatio >= 0.9},
		)
	}
	return ts
}

// writeFleetTable writes the fleet sweep, the affinity run and their
// targets for people.
func (r *Report) writeFleetTable(w io.Writer) error {
	if len(r.Fleet) > 0 {
		fmt.Fprintf(w, "fleet sweep: one in-process sidecar per worker, %d-task backlog, %d tasks to idle workers\n",
			r.Settings.FleetTasks, r.Settings.DispatchSamples)
		fmt.Fprintln(w, "(per task; CPU = the bench process: all sidecars and their consumers; etcd runs apart)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "sidecars\ttasks/s\ttxns/task\tfailed\tclaim conflicts\tKV reqs\twatch events\tsent bytes\tfleet CPU ms\tetcd CPU ms\tRSS MiB\tload1\t")
		for _, f := range r.Fleet {
			c := f.Drain
			fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.3f\t%.1f\t%.1f\t%.0f\t%.2f\t%s\t%.0f\t%.2f\t\n", f.Sidecars, f.TasksPerS,
				c.TxnsPerTask, c.FailedTxnsPerTask, c.ClaimConflictsPerTask, c.KVRequestsPerTask, c.WatchEventsPerTask,
				c.SentBytesPerTask, c.CPUMSPerTask, opt(c.EtcdCPUMSPerTask, "%.2f"), f.BenchRSSMB, f.Load1)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, f := range r.Fleet {
			if f.Unavailable > 0 || f.LostClaims > 0 {
				fmt.Fprintf(w, "  %d sidecars: workers were told %d times that their sidecar had no lease (Unavailable) and lost %d claims; they retried\n",
					f.Sidecars, f.Unavailable, f.LostClaims)
			}
			if f.AmbiguousCompletes > 0 {
				fmt.Fprintf(w, "  %d sidecars: %d Completes were answered Unavailable, then the claim was gone; counted as done\n",
					f.Sidecars, f.AmbiguousCompletes)
			}
		}
		fmt.Fprintln(w, "\nfleet: dispatch to idle workers (one task at a time; per task)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "sidecars\tp50 ms\tp99 ms\tdispatch conflicts\ttxns/task\tfailed\twatch events\tsent bytes\tfleet CPU ms\tetcd CPU ms\t")
		for _, f := range r.Fleet {
			c := f.Idle
			fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.3f\t%.2f\t%.2f\t%.1f\t%.0f\t%.2f\t%s\t\n", f.Sidecars, f.DispatchP50MS, f.DispatchP99MS,
				f.DispatchConflictsPerTask, c.TxnsPerTask, c.FailedTxnsPerTask, c.WatchEventsPerTask, c.SentBytesPerTask,
				c.CPUMSPerTask, opt(c.EtcdCPUMSPerTask, "%.2f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if a := r.Affinity; a != nil {
		fmt.Fprintf(w, "\naffinity: %d tasks over %d speakers, %d sidecars with one worker each\n", a.Tasks, a.Speakers, a.Sidecars)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "keys\thit share\ttasks/s\ttxns/task\twatch events/task\tfleet CPU ms/task\t")
		fmt.Fprintf(tw, "without\t%.3f\t%.0f\t%.2f\t%.1f\t%.2f\t\n", a.HitShareWithout, a.TasksPerSWithout, a.CostWithout.TxnsPerTask, a.CostWithout.WatchEventsPerTask, a.CostWithout.CPUMSPerTask)
		fmt.Fprintf(tw, "with\t%.3f\t%.0f\t%.2f\t%.1f\t%.2f\t\n", a.HitShare, a.TasksPerS, a.Cost.TxnsPerTask, a.Cost.WatchEventsPerTask, a.Cost.CPUMSPerTask)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return writeTargets(w, "targets (issue 12: fleet scale)", r.FleetTargets)
}

func writeTargets(w io.Writer, title string, ts []Target) error {
	if len(ts) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range ts {
		verdict := "met"
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(tw, "%s\t%s\tgot %s\t%s\n", t.Name, t.Want, t.Got, verdict)
	}
	return tw.Flush()
}
