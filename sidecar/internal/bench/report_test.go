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
	if img.Bounds().Dx() != plotW || img.Bounds().Dy() != plotH {
		t.Fatalf("plot is %v", img.Bounds())
	}
	if err := (&Report{}).WritePlot(&b); err == nil {
		t.Fatal("plotted an empty report")
	}
}
