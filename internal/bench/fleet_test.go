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

// TestBenchFleet runs the fleet sweep and the affinity run at a tiny size
// (fleets of 2 and 4 in-process sidecars, 40 tasks) on the test's etcd. It
// checks that every task was delivered exactly once, that each figure of
// the report is present and plausible, that the targets of issue 12 are
// evaluated, and that nothing is left in etcd. It asserts nothing about
// speed.
func TestBenchFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and sidecars")
	}
	endpoint := sidecartest.Etcd(t)
	plot := filepath.Join(t.TempDir(), "fleet.png")
	const tasks = 40
	var stdout, stderr bytes.Buffer
	err := batoncli.New(&stdout, &stderr).RunContext(context.Background(), []string{"baton", "--endpoints", endpoint, "--namespace", "bf", "bench",
		"--fleet", "2,4", "--fleet-tasks", "40", "--dispatch-samples", "5", "-o", "json", "--plot", plot})
	if err != nil {
		t.Fatalf("baton bench: %v\nstderr:\n%s", err, stderr.String())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "bf.bench.", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("after the bench etcd holds %d keys under bf.bench.; want none", resp.Count)
	}

	// The JSON names every figure of the fleet section.
	var raw struct {
		Fleet    []map[string]any `json:"fleet"`
		Affinity map[string]any   `json:"affinity"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	for _, f := range raw.Fleet {
		for _, k := range []string{"sidecars", "tasks_per_s", "dispatch_p50_ms", "dispatch_p99_ms", "dispatch_conflicts_per_task", "idle", "drain", "etcd_watchers"} {
			if _, ok := f[k]; !ok {
				t.Errorf("fleet result %v has no %q", f["sidecars"], k)
			}
		}
		for _, phase := range []string{"idle", "drain"} {
			c, _ := f[phase].(map[string]any)
			for _, k := range []string{"txns_per_task", "writes_per_task", "failed_txns_per_task", "claim_conflicts_per_task",
				"watch_events_per_task", "sent_bytes_per_task", "cpu_ms_per_task"} {
				if _, ok := c[k]; !ok {
					t.Errorf("fleet result %v, %s: no %q", f["sidecars"], phase, k)
				}
			}
		}
	}
	for _, k := range []string{"hit_share", "hit_share_without_keys", "tasks_per_s", "tasks_per_s_without_keys", "throughput_ratio"} {
		if _, ok := raw.Affinity[k]; !ok {
			t.Errorf("affinity has no %q", k)
		}
	}

	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 0 {
		t.Errorf("%d system results; the comparison is opt-in", len(rep.Results))
	}
	if len(rep.Fleet) != 2 {
		t.Fatalf("%d fleet results; want 2", len(rep.Fleet))
	}
	for i, n := range []int{2, 4} {
		f := rep.Fleet[i]
		if f.Sidecars != n || f.Tasks != tasks || f.Delivered != tasks || f.Duplicates != 0 {
			t.Errorf("fleet %d: %d sidecars, %d tasks, %d delivered, %d duplicates; want %d, %d, %d, 0",
				i, f.Sidecars, f.Tasks, f.Delivered, f.Duplicates, n, tasks, tasks)
		}
		if f.DispatchSamples != 5 || f.DispatchP50MS <= 0 || f.DispatchP99MS < f.DispatchP50MS || f.TasksPerS <= 0 {
			t.Errorf("fleet of %d: implausible throughput or dispatch %+v", n, f)
		}
		// A task costs at least its claim and complete, and each of its
		// events reaches at least one watcher; at most a few failed
		// claims per sidecar.
		for phase, c := range map[string]bench.PhaseCost{"idle": f.Idle, "drain": f.Drain} {
			if c.TxnsPerTask < 2 || c.WritesPerTask < 2 || c.WatchEventsPerTask < 2 || c.SentBytesPerTask <= 0 ||
				c.CPUMSPerTask <= 0 || c.FailedTxnsPerTask < 0 || c.ClaimConflictsPerTask < 0 || c.ClaimConflictsPerTask > float64(n) {
				t.Errorf("fleet of %d, %s: implausible cost %+v", n, phase, c)
			}
		}
		if f.EtcdWatchers < n {
			t.Errorf("fleet of %d: etcd has %d watchers", n, f.EtcdWatchers)
		}
	}
	a := rep.Affinity
	if a == nil || a.Sidecars != bench.AffinitySidecars || a.Speakers != bench.AffinitySpeakers || a.Tasks != tasks ||
		a.HitShare < 0 || a.HitShare > 1 || a.HitShareWithout < 0 || a.HitShareWithout > 1 || a.TasksPerS <= 0 || a.TasksPerSWithout <= 0 {
		t.Errorf("affinity %+v", a)
	}
	names := map[string]bool{}
	for _, tg := range rep.FleetTargets {
		names[tg.Name] = true
		if tg.Got == "" || tg.Want == "" {
			t.Errorf("target %+v", tg)
		}
	}
	for _, want := range []string{"tasks/s at 4 vs 2 sidecars", "dispatch p99 at 4 idle sidecars",
		"watch events/task, backlog, at 4 vs 2 sidecars", "affinity hit share (32 speakers, 16 workers)"} {
		if !names[want] {
			t.Errorf("no target %q in %v", want, names)
		}
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fleet sweep", "dispatch to idle workers", "affinity", "issue 12", "watch events"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	fp, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	if _, err := png.Decode(fp); err != nil {
		t.Fatalf("plot: %v", err)
	}
}
