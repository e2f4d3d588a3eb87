package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run; its JSON form is `baton bench --json`.
type Report struct {
	Machine   Machine    `json:"machine"`
	Settings  Settings   `json:"settings"`
	Started   time.Time  `json:"started"`
	Finished  time.Time  `json:"finished"`
	Seconds   float64    `json:"seconds"`
	LoadStart [3]float64 `json:"load_start"`
	LoadEnd   [3]float64 `json:"load_end"`
	// Fleet has one entry per fleet size of the fleet sweep.
	Fleet []FleetResult `json:"fleet"`
	// Affinity is the affinity run, when measured.
	Affinity *AffinityResult `json:"affinity,omitempty"`
	// FleetTargets are the goals of issue 12, checked against Fleet and
	// Affinity.
	FleetTargets []Target `json:"fleet_targets"`
	// Results has one entry per system and consumer count.
	Results []Result `json:"results"`
	// Ratios compares baton with the others at each consumer count.
	Ratios []Ratio `json:"ratios"`
	// Targets are the goals of issue 4, checked against Results.
	Targets  []Target   `json:"targets"`
	Overhead []Overhead `json:"overhead"`
	Depth    []Depth    `json:"depth"`
}

// Machine is where the run happened.
type Machine struct {
	Host          string   `json:"host"`
	Cores         int      `json:"cores"`
	GOOS          string   `json:"goos"`
	GOARCH        string   `json:"goarch"`
	Go            string   `json:"go"`
	Etcd          string   `json:"etcd"`
	EtcdEndpoints []string `json:"etcd_endpoints"`
	EmbeddedEtcd  bool     `json:"embedded_etcd"`
}

// Settings are the run's parameters.
type Settings struct {
	Systems         []string `json:"systems"`
	Consumers       []int    `json:"consumers"`
	Tasks           int      `json:"tasks"`
	Sidecars        int      `json:"sidecars"`
	DispatchSamples int      `json:"dispatch_samples"`
	Samples         int      `json:"samples"`
	Depths          []int    `json:"depths"`
	Fleet           []int    `json:"fleet"`
	FleetTasks      int      `json:"fleet_tasks"`
	Affinity        bool     `json:"affinity"`
}

func settingsOf(c Config) Settings {
	s := Settings{Systems: c.Systems, Consumers: c.Consumers, Tasks: c.Tasks, Sidecars: c.Sidecars,
		DispatchSamples: c.DispatchSamples, Samples: c.Samples, Depths: c.Depths}
	if c.SkipDepth || !c.compares() {
		s.Depths = nil
	}
	if !c.compares() {
		s.Consumers, s.Sidecars, s.Samples = nil, 0, 0
	}
	if !c.SkipFleet {
		s.Fleet, s.FleetTasks = c.Fleet, c.FleetTasks
	}
	s.Affinity = !c.SkipAffinity
	if !c.SkipAffinity {
		s.FleetTasks = c.FleetTasks
	}
	return s
}

// Result is one system at one consumer count. A "task" of the ceiling is
// one write transaction. Latencies are in milliseconds.
type Result struct {
	System     string `json:"system"`
	Consumers  int    `json:"consumers"`
	Tasks      int    `json:"tasks"`
	Delivered  int    `json:"delivered"`
	Duplicates int    `json:"duplicates"`
	// Seconds from the consumers' start to the last delivery.
	Seconds   float64 `json:"seconds"`
	TasksPerS float64 `json:"tasks_per_s"`
	// Conflicts are claim transactions that lost a race (their compare
	// failed).
	Conflicts        int64   `json:"conflicts"`
	ConflictsPerTask float64 `json:"conflicts_per_task"`
	// Claim latency: one claim as its consumer sees it, retries included.
	ClaimP50MS float64 `json:"claim_p50_ms"`
	ClaimP99MS float64 `json:"claim_p99_ms"`
	// EtcdWritesPerS counts etcd revisions (write transactions that
	// changed something) during the measurement.
	EtcdWritesPerS    float64 `json:"etcd_writes_per_s"`
	EtcdWritesPerTask float64 `json:"etcd_writes_per_task"`
	// BenchCPUMSPerTask is the CPU time of the bench process (the
	// consumers, and the embedded etcd unless --endpoints was given) per
	// task.
	BenchCPUMSPerTask float64 `json:"bench_cpu_ms_per_task"`
	// Load1 is the 1-minute load average at the end of the measurement.
	Load1 float64 `json:"load1"`

	// Baton only.
	Sidecars                 *int     `json:"sidecars,omitempty"`
	DispatchP50MS            *float64 `json:"dispatch_p50_ms,omitempty"`
	DispatchP99MS            *float64 `json:"dispatch_p99_ms,omitempty"`
	DispatchConflictsPerTask *float64 `json:"dispatch_conflicts_per_task,omitempty"`
	// SidecarRSSMB is the largest peak resident set (VmHWM) among the
	// sidecar processes while they served the consumers, in MiB.
	SidecarRSSMB *float64 `json:"sidecar_rss_mb,omitempty"`
	// SidecarCPUMSPerTask is the CPU time of all sidecar processes during
	// the measurement divided by the tasks delivered.
	SidecarCPUMSPerTask *float64 `json:"sidecar_cpu_ms_per_task,omitempty"`
}

// Ratio compares baton with the other systems at one consumer count;
// a field is absent when a system was not measured.
type Ratio struct {
	Consumers int `json:"consumers"`
	// BatonOverRecipes and BatonOverNaive divide tasks per second.
	BatonOverRecipes *float64 `json:"baton_over_recipes,omitempty"`
	BatonOverNaive   *float64 `json:"baton_over_naive,omitempty"`
	// BatonWritesOverCeiling is baton's etcd writes per second as a
	// fraction of the ceiling's.
	BatonWritesOverCeiling *float64 `json:"baton_writes_over_ceiling,omitempty"`
}

// Target is one goal of issue 4 and whether this run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Overhead compares one operation through the sidecar's socket with the
// same operation done directly. HopP50MS is the difference of the medians.
type Overhead struct {
	Op          string   `json:"op"`
	Samples     int      `json:"samples"`
	SocketP50MS *float64 `json:"socket_p50_ms,omitempty"`
	SocketP99MS *float64 `json:"socket_p99_ms,omitempty"`
	DirectP50MS float64  `json:"direct_p50_ms"`
	DirectP99MS float64  `json:"direct_p99_ms"`
	HopP50MS    *float64 `json:"hop_p50_ms,omitempty"`
	Note        string   `json:"note,omitempty"`
}

// Depth is the claim cost with a number of tasks pending.
type Depth struct {
	Pending       int     `json:"pending"`
	Samples       int     `json:"samples"`
	LoadSeconds   float64 `json:"load_seconds"`
	ClaimP50MS    float64 `json:"claim_p50_ms"`
	ClaimP99MS    float64 `json:"claim_p99_ms"`
	CompleteP50MS float64 `json:"complete_p50_ms"`
	CompleteP99MS float64 `json:"complete_p99_ms"`
	Load1         float64 `json:"load1"`
}

func ptr[T any](v T) *T { return &v }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// Find returns the result of a system at a consumer count.
func (r *Report) Find(system string, consumers int) (Result, bool) {
	for _, res := range r.Results {
		if res.System == system && res.Consumers == consumers {
			return res, true
		}
	}
	return Result{}, false
}

// targetConsumers is where issue 4 sets its targets.
const targetConsumers = 32

// derive computes the ratios and checks the targets.
func (r *Report) derive() {
	r.Ratios = nil
	for _, n := range r.Settings.Consumers {
		b, ok := r.Find(SystemBaton, n)
		if !ok {
			continue
		}
		ra := Ratio{Consumers: n}
		if x, ok := r.Find(SystemRecipes, n); ok && x.TasksPerS > 0 {
			ra.BatonOverRecipes = ptr(round(b.TasksPerS/x.TasksPerS, 2))
		}
		if x, ok := r.Find(SystemNaive, n); ok && x.TasksPerS > 0 {
			ra.BatonOverNaive = ptr(round(b.TasksPerS/x.TasksPerS, 2))
		}
		if x, ok := r.Find(SystemCeiling, n); ok && x.EtcdWritesPerS > 0 {
			ra.BatonWritesOverCeiling = ptr(round(b.EtcdWritesPerS/x.EtcdWritesPerS, 3))
		}
		r.Ratios = append(r.Ratios, ra)
	}
	r.Targets = r.targets()
	r.FleetTargets = r.fleetTargets()
}

func (r *Report) ratio(n int) (Ratio, bool) {
	for _, ra := range r.Ratios {
		if ra.Consumers == n {
			return ra, true
		}
	}
	return Ratio{}, false
}

// targets checks the goals of issue 4 that this run measured.
func (r *Report) targets() []Target {
	var ts []Target
	at := fmt.Sprintf(" at %d consumers", targetConsumers)
	b, ok := r.Find(SystemBaton, targetConsumers)
	ra, _ := r.ratio(targetConsumers)
	if ok && ra.BatonOverRecipes != nil {
		ts = append(ts, Target{"baton / recipes" + at, "≥ 10×", fmt.Sprintf("%.2f×", *ra.BatonOverRecipes), *ra.BatonOverRecipes >= 10})
	}
	if ok && ra.BatonOverNaive != nil {
		ts = append(ts, Target{"baton / naive" + at, "≥ 5×", fmt.Sprintf("%.2f×", *ra.BatonOverNaive), *ra.BatonOverNaive >= 5})
	}
	if b128, ok128 := r.Find(SystemBaton, 128); ok && ok128 {
		// "Flat" allows for the noise of a shared machine: no more than 10%
		// below the 32-consumer figure.
		f := b128.TasksPerS / b.TasksPerS
		ts = append(ts, Target{"baton 128 vs 32 consumers (no collapse)", "≥ 0.9× (rising or flat)", fmt.Sprintf("%.2f×", f), f >= 0.9})
	}
	if ok {
		ts = append(ts, Target{"baton conflicts per task" + at, "≤ 0.05", fmt.Sprintf("%.3f", b.ConflictsPerTask), b.ConflictsPerTask <= 0.05})
		if b.DispatchP50MS != nil {
			ts = append(ts, Target{"baton dispatch p50, idle workers" + at, "≤ 5 ms", fmt.Sprintf("%.2f ms", *b.DispatchP50MS), *b.DispatchP50MS <= 5})
		}
	}
	if ok && ra.BatonWritesOverCeiling != nil {
		ts = append(ts, Target{"baton etcd writes/s vs ceiling" + at, "≥ 60%", fmt.Sprintf("%.0f%%", 100**ra.BatonWritesOverCeiling), *ra.BatonWritesOverCeiling >= 0.6})
	}
	// RSS: the largest sidecar of any run, which includes runs with 32
	// workers per sidecar when there are 32 × sidecars consumers.
	var rss float64
	var where string
	for _, res := range r.Results {
		if res.SidecarRSSMB != nil && *res.SidecarRSSMB > rss {
			rss = *res.SidecarRSSMB
			where = fmt.Sprintf("%d consumers on %d sidecars", res.Consumers, *res.Sidecars)
		}
	}
	if rss > 0 {
		ts = append(ts, Target{"largest sidecar RSS of any run", "≤ 40 MB", fmt.Sprintf("%.1f MiB (%s)", rss, where), rss <= 40})
	}
	return ts
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	etcd := "etcd " + m.Etcd
	if m.EmbeddedEtcd {
		etcd = "embedded etcd " + m.Etcd
	}
	fmt.Fprintf(w, "baton bench: %s; %d cores, %s %s/%s; load %s -> %s; %.0fs\n\n",
		etcd, m.Cores, m.Go, m.GOOS, m.GOARCH, loadString(r.LoadStart), loadString(r.LoadEnd), r.Seconds)
	if err := r.writeFleetTable(w); err != nil {
		return err
	}
	if len(r.Results) == 0 {
		return nil
	}
	if len(r.Fleet) > 0 || r.Affinity != nil {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "systems: %d tasks per run, up to %d sidecar processes serving the consumers\n", r.Settings.Tasks, r.Settings.Sidecars)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tconsumers\ttasks/s\tconflicts/task\tclaim p50 ms\tclaim p99 ms\tetcd writes/s\twrites/task\tbench CPU ms/task\tload1\t")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.2f\t%.2f\t%.0f\t%.2f\t%.3f\t%.2f\t\n",
			res.System, res.Consumers, res.TasksPerS, res.ConflictsPerTask, res.ClaimP50MS, res.ClaimP99MS,
			res.EtcdWritesPerS, res.EtcdWritesPerTask, res.BenchCPUMSPerTask, res.Load1)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var batonRows []Result
	for _, res := range r.Results {
		if res.Sidecars != nil {
			batonRows = append(batonRows, res)
		}
	}
	if len(batonRows) > 0 {
		fmt.Fprintln(w, "\nbaton: sidecars, dispatch to idle workers, sidecar processes")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "consumers\tsidecars\tdispatch p50 ms\tdispatch p99 ms\tdispatch conflicts/task\tsidecar RSS MiB\tsidecar CPU ms/task\t")
		for _, res := range batonRows {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", res.Consumers, *res.Sidecars,
				opt(res.DispatchP50MS, "%.2f"), opt(res.DispatchP99MS, "%.2f"), opt(res.DispatchConflictsPerTask, "%.3f"),
				opt(res.SidecarRSSMB, "%.1f"), opt(res.SidecarCPUMSPerTask, "%.3f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "consumers\tbaton/recipes\tbaton/naive\tbaton writes/ceiling\t")
		for _, ra := range r.Ratios {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t\n", ra.Consumers, opt(ra.BatonOverRecipes, "%.1f×"), opt(ra.BatonOverNaive, "%.1f×"), percent(ra.BatonWritesOverCeiling))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if err := writeTargets(w, "targets (issue 4)", r.Targets); err != nil {
		return err
	}

	if len(r.Overhead) > 0 {
		fmt.Fprintln(w, "\nsidecar overhead (one worker, one operation at a time)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "op\tsocket p50 ms\tsocket p99 ms\tdirect p50 ms\tdirect p99 ms\thop p50 ms\t")
		for _, o := range r.Overhead {
			if o.Note != "" {
				fmt.Fprintf(tw, "%s\t%s\t\t%.3f\t%.3f\t\t\n", o.Op, o.Note, o.DirectP50MS, o.DirectP99MS)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%.3f\t%s\t\n", o.Op, opt(o.SocketP50MS, "%.3f"), opt(o.SocketP99MS, "%.3f"), o.DirectP50MS, o.DirectP99MS, opt(o.HopP50MS, "%+.3f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(r.Depth) > 0 {
		fmt.Fprintln(w, "\nqueue depth (one worker through one sidecar; claim = Next)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "pending\tclaim p50 ms\tclaim p99 ms\tcomplete p50 ms\tcomplete p99 ms\tload s\tload1\t")
		for _, d := range r.Depth {
			fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.1f\t%.2f\t\n", d.Pending, d.ClaimP50MS, d.ClaimP99MS, d.CompleteP50MS, d.CompleteP99MS, d.LoadSeconds, d.Load1)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func opt(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100**v)
}

func loadString(l [3]float64) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(s, " ")
}
