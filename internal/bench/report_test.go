package bench

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	var l latencies
	for i := 100; i >= 1; i-- {
		l.add(time.Duration(i) * time.Millisecond)
	}
	if p50, p99 := l.quantile(0.5), l.quantile(0.99); p50 != 50 || p99 != 99 {
		t.Fatalf("p50 %v p99 %v; want 50 and 99", p50, p99)
	}
	if (latencies{}).quantile(0.5) != 0 {
		t.Fatal("quantile of nothing is not 0")
	}
}

// syntheticReport has made-up figures, for testing the derived parts.
func syntheticReport() *Report {
	r := &Report{Settings: Settings{Consumers: []int{32, 128}, Tasks: 1000, Sidecars: 4}, Machine: Machine{Cores: 2, Etcd: "3.7.3"}}
	add := func(sys string, n int, tps, writes, conflicts float64) *Result {
		r.Results = append(r.Results, Result{System: sys, Consumers: n, TasksPerS: tps, EtcdWritesPerS: writes, ConflictsPerTask: conflicts})
		return &r.Results[len(r.Results)-1]
	}
	for _, n := range []int{32, 128} {
		add(SystemCeiling, n, 6000, 6000, 0)
		add(SystemRecipes, n, 100, 100, 10)
		add(SystemNaive, n, 250, 500, 15)
	}
	b := add(SystemBaton, 32, 1500, 3000, 0.02)
	b.DispatchP50MS, b.SidecarRSSMB, b.Sidecars = ptr(3.0), ptr(30.0), ptr(4)
	b = add(SystemBaton, 128, 1200, 2400, 0.2)
	b.DispatchP50MS, b.SidecarRSSMB, b.Sidecars = ptr(4.0), ptr(42.0), ptr(4)
	r.derive()
	return r
}

func TestTargets(t *testing.T) {
	r := syntheticReport()
	if len(r.Ratios) != 2 || *r.Ratios[0].BatonOverRecipes != 15 || *r.Ratios[0].BatonOverNaive != 6 || *r.Ratios[0].BatonWritesOverCeiling != 0.5 {
		t.Fatalf("ratios %+v", r.Ratios)
	}
	met := map[string]bool{}
	for _, tg := range r.Targets {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"baton / recipes at 32 consumers":                  true,
		"baton / naive at 32 consumers":                    true,
		"baton 128 vs 32 consumers (no collapse)":          false, // 0.8×
		"baton conflicts per task at 32 consumers":         true,
		"baton dispatch p50, idle workers at 32 consumers": true,
		"baton etcd writes/s vs ceiling at 32 consumers":   false, // 50%
		"largest sidecar RSS of any run":                   false, // 42 MiB at 128
	}
	for name, w := range want {
		if got, ok := met[name]; !ok || got != w {
			t.Errorf("target %q: met %v (present %v); want %v", name, got, ok, w)
		}
	}
	if len(met) != len(want) {
		t.Errorf("targets %+v", r.Targets)
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "MISSED") || !strings.Contains(b.String(), "15.00×") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestPlot(t *testing.T) {
	var b bytes.Buffer
	if err := syntheticReport().WritePlot(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != plotPanelW || img.Bounds().Dy() != plotPanelH+plotTitleH {
		t.Fatalf("plot is %v; want one panel", img.Bounds())
	}
	// With the fleet sweep: six fleet panels and the systems', in rows of three.
	r := syntheticReport()
	r.Fleet = syntheticFleet().Fleet
	b.Reset()
	if err := r.WritePlot(&b); err != nil {
		t.Fatal(err)
	}
	if img, err = png.Decode(&b); err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 3*plotPanelW || img.Bounds().Dy() != 3*plotPanelH+plotTitleH {
		t.Fatalf("plot is %v; want 3 × 3 panels", img.Bounds())
	}
	if err := (&Report{}).WritePlot(&b); err == nil {
		t.Fatal("plotted an empty report")
	}
}

// syntheticFleet has made-up fleet figures: flat costs from 8 to 64
// sidecars, growing ones at 256.
func syntheticFleet() *Report {
	r := &Report{Settings: Settings{Fleet: []int{8, 64, 256}, FleetTasks: 1000, DispatchSamples: 200}, Machine: Machine{Cores: 2, Etcd: "3.7.3"}}
	cost := func(txns, events float64) PhaseCost {
		return PhaseCost{Tasks: 1000, TxnsPerTask: txns, WritesPerTask: 3, WatchEventsPerTask: events, SentBytesPerTask: 900, CPUMSPerTask: 1, EtcdCPUMSPerTask: ptr(0.5)}
	}
	r.Fleet = []FleetResult{
		{Sidecars: 8, TasksPerS: 500, DispatchP50MS: 2, DispatchP99MS: 9, DispatchConflictsPerTask: 0, Drain: cost(3, 5), Idle: cost(3, 5)},
		{Sidecars: 64, TasksPerS: 520, DispatchP50MS: 2, DispatchP99MS: 9, DispatchConflictsPerTask: 0.01, Drain: cost(3.1, 5), Idle: cost(3.1, 5)},
		{Sidecars: 256, TasksPerS: 480, DispatchP50MS: 4.5, DispatchP99MS: 30, DispatchConflictsPerTask: 0.02, Drain: cost(3.5, 5.5), Idle: cost(3.7, 6.5)},
	}
	r.Affinity = &AffinityResult{Sidecars: 16, Speakers: 32, Tasks: 1000, HitShare: 0.85, HitShareWithout: 0.03, TasksPerS: 450, TasksPerSWithout: 480, ThroughputRatio: 0.9375}
	r.derive()
	return r
}

func TestFleetTargets(t *testing.T) {
	r := syntheticFleet()
	want := map[string]bool{
		"tasks/s at 256 vs 8 sidecars":                                    false, // 0.96×
		"etcd txns/task, backlog, at 256 vs 8 sidecars":                   true,  // 1.17×
		"etcd txns/task, idle workers, at 256 vs 8 sidecars":              false, // 1.23×
		"watch events/task, backlog, at 256 vs 8 sidecars":                true,  // 1.10×
		"watch events/task, idle workers, at 256 vs 8 sidecars":           false, // 1.30×
		"dispatch conflicts/task at 256 idle sidecars":                    true,
		"dispatch p50 at 256 idle sidecars":                               true,
		"dispatch p99 at 256 idle sidecars":                               false, // 30 ms
		"affinity hit share (32 speakers, 16 workers)":                    true,
		"tasks/s with affinity keys vs without (32 speakers, 16 workers)": true, // 0.94×
	}
	got := map[string]Target{}
	for _, tg := range r.FleetTargets {
		got[tg.Name] = tg
	}
	for name, w := range want {
		if tg, ok := got[name]; !ok || tg.Met != w {
			t.Errorf("target %q: %+v (present %v); want met %v", name, tg, ok, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("targets %+v", r.FleetTargets)
	}
	if tg := got["tasks/s at 256 vs 8 sidecars"]; tg.Got != "0.96× (480 vs 500)" {
		t.Errorf("throughput target says %q; want the ratio and both figures", tg.Got)
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"fleet sweep", "issue 12", "MISSED", "0.850"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}
