package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/bench"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestBenchCommand runs `baton bench` end to end at a tiny size on an etcd
// of the test's: sidecar processes (this test binary re-executed as
// baton), every system at two consumer counts, the overhead and two queue
// depths. It checks that every system delivered every task exactly once,
// that the JSON, the table and the plot are well formed and that nothing
// is left in etcd. It asserts nothing about speed.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and sidecar processes")
	}
	t.Setenv(roleEnv, "baton") // for the sidecar processes; this process checked it at start
	endpoint := sidecartest.Etcd(t)
	plot := filepath.Join(t.TempDir(), "bench.png")
	const tasks = 40
	var stdout, stderr bytes.Buffer
	app := batoncli.New(&stdout, &stderr)
	err := app.RunContext(context.Background(), []string{"baton", "--endpoints", endpoint, "--namespace", "bt", "bench",
		"--systems", "all", "--skip-fleet", "--skip-affinity", "--consumers", "1,4", "--tasks", "40", "--sidecars", "2", "--dispatch-samples", "5",
		"--samples", "5", "--depths", "20,200", "--json", "--plot", plot})
	if err != nil {
		t.Fatalf("baton bench: %v\nstderr:\n%s", err, stderr.String())
	}
	// Everything written (under bt.bench.<time>/) is gone.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "bt.bench.", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("after the bench etcd holds %d keys under bt.bench.; want none", resp.Count)
	}

	// The JSON has the fields the issue names, for every system.
	var raw struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	common := []string{"system", "consumers", "tasks_per_s", "conflicts_per_task", "claim_p50_ms", "claim_p99_ms", "etcd_writes_per_s", "bench_cpu_ms_per_task"}
	batonOnly := []string{"dispatch_p50_ms", "dispatch_p99_ms", "dispatch_conflicts_per_task", "sidecar_rss_mb", "sidecar_cpu_ms_per_task", "sidecars"}
	for _, r := range raw.Results {
		want := common
		if r["system"] == bench.SystemBaton {
			want = append(want, batonOnly...)
		}
		for _, f := range want {
			if _, ok := r[f]; !ok {
				t.Errorf("result %v %v has no %q", r["system"], r["consumers"], f)
			}
		}
	}

	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2*len(bench.Systems) {
		t.Fatalf("%d results; want one per system and consumer count", len(rep.Results))
	}
	for _, n := range []int{1, 4} {
		for _, sys := range bench.Systems {
			r, ok := rep.Find(sys, n)
			if !ok {
				t.Errorf("no result for %s with %d consumers", sys, n)
				continue
			}
			want := tasks
			if sys == bench.SystemCeiling {
				want = 5 * tasks
			}
			// Every task delivered exactly once.
			if r.Tasks != want || r.Delivered != want || r.Duplicates != 0 {
				t.Errorf("%s with %d consumers: %d tasks, %d delivered, %d duplicates; want %d, %d, 0",
					sys, n, r.Tasks, r.Delivered, r.Duplicates, want, want)
			}
			if r.TasksPerS <= 0 || r.Seconds <= 0 || r.ClaimP50MS <= 0 || r.ClaimP99MS < r.ClaimP50MS || r.EtcdWritesPerS <= 0 {
				t.Errorf("%s with %d consumers: implausible figures %+v", sys, n, r)
			}
			if sys == bench.SystemBaton {
				if r.DispatchP50MS == nil || *r.DispatchP50MS <= 0 || r.SidecarRSSMB == nil || *r.SidecarRSSMB <= 0 ||
					r.SidecarCPUMSPerTask == nil || r.Sidecars == nil || *r.Sidecars != min(n, 2) {
					t.Errorf("baton with %d consumers: missing or implausible sidecar figures %+v", n, r)
				}
			}
		}
	}
	if len(rep.Ratios) != 2 || rep.Ratios[0].BatonOverRecipes == nil || rep.Ratios[0].BatonOverNaive == nil || rep.Ratios[0].BatonWritesOverCeiling == nil {
		t.Errorf("ratios %+v; want all three at both consumer counts", rep.Ratios)
	}
	ops := map[string]bench.Overhead{}
	for _, o := range rep.Overhead {
		ops[o.Op] = o
	}
	if o := ops["claim (Next)"]; o.SocketP50MS == nil || o.DirectP50MS <= 0 || o.Samples != 5 {
		t.Errorf("claim overhead %+v; want socket and direct figures from 5 samples", o)
	}
	// Until LockService is served, the lock is reported as not available.
	if o, ok := ops["lock"]; !ok || o.DirectP50MS <= 0 || (o.SocketP50MS == nil) == (o.Note == "") {
		t.Errorf("lock overhead %+v; want direct figures and either socket figures or a note", o)
	}
	if len(rep.Depth) != 2 || rep.Depth[0].Pending != 20 || rep.Depth[1].Pending != 200 || rep.Depth[1].ClaimP50MS <= 0 {
		t.Errorf("depth %+v; want claims timed at 20 and 200 pending", rep.Depth)
	}

	// The table shows the same run for people.
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range append(bench.Systems, "ratios", "sidecar overhead", "queue depth", "baton/naive", "dispatch p50 ms") {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	// The plot is a PNG.
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("plot: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("plot is %v", b)
	}
}

// TestBenchEmbedded: without --endpoints the bench runs on an etcd of its
// own, in a process of its own (here only the ceiling, which needs no
// sidecar).
func TestBenchEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	t.Setenv("BATON_ENDPOINTS", "")
	os.Unsetenv("BATON_ENDPOINTS") // whatever the caller's environment says
	t.Setenv(roleEnv, "baton")     // for the etcd process
	var stdout, stderr bytes.Buffer
	err := batoncli.New(&stdout, &stderr).RunContext(context.Background(), []string{"baton", "bench",
		"--systems", "ceiling", "--consumers", "2", "--tasks", "10", "--skip-depth", "--skip-overhead",
		"--skip-fleet", "--skip-affinity"})
	if err != nil {
		t.Fatalf("baton bench: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "embedded etcd on") || !strings.Contains(stdout.String(), "embedded etcd") {
		t.Errorf("stdout %q, stderr %q; want the embedded etcd named", stdout.String(), stderr.String())
	}
}

// TestBenchFlags checks that bad flags are refused before anything starts,
// with a message naming the flag.
func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--consumers", "0"}, "consumers:"},
		{[]string{"--tasks", "-1"}, "tasks:"},
		{[]string{"--systems", "kafka"}, "systems:"},
		{[]string{"--sidecars", "1000"}, "sidecars:"},
		{[]string{"--fleet", "0"}, "fleet:"},
		{[]string{"--fleet", "3000"}, "fleet:"},
		{[]string{"--fleet-tasks", "-1"}, "fleet-tasks:"},
		{[]string{"--depths", "0"}, "depths:"},
		{[]string{"--plot", "out.jpg"}, "plot:"},
		{[]string{"-o", "yaml"}, "output:"},
	} {
		var stdout, stderr bytes.Buffer
		err := batoncli.New(&stdout, &stderr).RunContext(context.Background(), append([]string{"baton", "bench"}, tc.args...))
		if err == nil || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("bench %v: err %v, stderr %q; want a usage error naming %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}
