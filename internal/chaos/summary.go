package chaos

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteSummary prints the run's table: tasks, faults by kind with their
// recovery times, requeues, duplicates, lost and violations.
func (r *Result) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "chaos seed %d: %d tasks (%d probes) in %v (DONE %d, DEAD %d, CANCELLED %d), %d worker calls\n",
		r.Seed, r.Submitted, r.Probes, r.Elapsed.Round(time.Second), r.Final["DONE"], r.Final["DEAD"], r.Final["CANCELLED"], r.Ops)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tcount\tstranded claims\trecovery p50\trecovery max\t")
	// Recovery: per stranded claim for process and network faults, per
	// fault (time to the first write) for etcd faults.
	byKind := map[string][]Fault{}
	for _, f := range r.Faults {
		byKind[f.Kind] = append(byKind[f.Kind], f)
	}
	for _, k := range AllFaults {
		fs := byKind[k]
		if len(fs) == 0 {
			continue
		}
		var rec []time.Duration
		stranded := 0
		for _, f := range fs {
			stranded += f.Stranded
			switch {
			case len(f.Recoveries) > 0:
				rec = append(rec, f.Recoveries...)
			case f.Stranded == 0 && f.Recovery > 0:
				rec = append(rec, f.Recovery)
			}
		}
		p50, mx := "-", "-"
		if len(rec) > 0 {
			slices.Sort(rec)
			p50 = round(rec[len(rec)/2])
			mx = round(rec[len(rec)-1])
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t\n", k, len(fs), stranded, p50, mx)
	}
	tw.Flush()
	r.writeScheduler(w)
	lost, stuck := 0, 0
	for _, v := range r.Report.Violations {
		switch v.Kind {
		case Lost:
			lost++
		case Stuck:
			stuck++
		}
	}
	fmt.Fprintf(w, "requeues %d  retries %d  cancels %d  duplicate executions %d  completes refused %d  stale writes refused %d\n",
		r.Requeues, r.Retries, r.Cancels, r.Duplicates, r.Refused, r.StaleWrites)
	fmt.Fprintf(w, "lock holdings %d (lost with their lease or process %d)  config writes %d, deliveries to watchers %d\n",
		r.LockHolds, r.LockLost, r.ConfigWrites, r.ConfigDeliveries)
	fmt.Fprintf(w, "lost %d  stuck %d  violations %d  linearizability undecided %d\n", lost, stuck, len(r.Report.Violations), len(r.Report.Undecided))
	for i, v := range r.Report.Violations {
		if i == 20 {
			fmt.Fprintf(w, "  ... %d more\n", len(r.Report.Violations)-i)
			break
		}
		fmt.Fprintln(w, "  VIOLATION", v)
	}
	if r.Failed() {
		fmt.Fprintf(w, "FAIL: replay the fault sequence with SEED=%d\n", r.Seed)
	} else {
		fmt.Fprintln(w, strings.Repeat("-", 20)+" all invariants held")
	}
}

func round(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// writeScheduler prints what each scheduler fault measured: the time until
// another sidecar was elected and until the probe task submitted right
// after the fault was claimed (dispatch stopped that long).
func (r *Result) writeScheduler(w io.Writer) {
	var elected, dispatch []time.Duration
	var lines []string
	none := 0
	for _, f := range r.Faults {
		if !isSchedulerFault(f.Kind) {
			continue
		}
		if f.NoScheduler {
			none++
			lines = append(lines, fmt.Sprintf("%s: no scheduler", f.Kind))
			continue
		}
		e, d := "not seen", "not seen"
		if f.Elected > 0 {
			elected = append(elected, f.Elected)
			e = round(f.Elected)
		}
		if f.Dispatch > 0 {
			dispatch = append(dispatch, f.Dispatch)
			d = round(f.Dispatch)
		}
		lines = append(lines, fmt.Sprintf("%s %s→%s %s/%s", strings.TrimPrefix(f.Kind, "scheduler-"), f.Target, f.NewScheduler, e, d))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "scheduler faults %d (no scheduler found %d): new scheduler elected p50 %s max %s; dispatch pause (probe claimed) p50 %s max %s\n",
		len(lines), none, pct(elected, 50), pct(elected, 100), pct(dispatch, 50), pct(dispatch, 100))
	fmt.Fprintf(w, "  elected/dispatch per fault: %s\n", strings.Join(lines, ", "))
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return round(s[min(len(s)-1, len(s)*p/100)])
}
