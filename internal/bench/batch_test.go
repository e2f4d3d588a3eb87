package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/bench"
	"github.com/batonhq/baton/sidecar/batoncli"
)

// TestBenchBatch runs `baton bench --batch` small, on an etcd of its own:
// every figure is measured (the drains complete every line, or the run
// fails), and the fed drain never saw more than --batch-max-pending
// unfinished.
func TestBenchBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	t.Setenv("BATON_ENDPOINTS", "")
	os.Unsetenv("BATON_ENDPOINTS")
	t.Setenv(roleEnv, "baton") // for the etcd and baton submit processes
	var stdout, stderr bytes.Buffer
	err := batoncli.New(&stdout, &stderr).RunContext(context.Background(), []string{"baton", "bench", "--batch",
		"--batch-lines", "300", "--batch-workers", "2", "--batch-max-pending", "30", "-o", "json"})
	if err != nil {
		t.Fatalf("baton bench --batch: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep map[string]float64
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	for _, k := range []string{"submit_seconds", "submit_lines_per_second", "submit_peak_rss_bytes", "etcd_bytes_per_pending_task",
		"drain_seconds", "etcd_bytes_per_finished_task", "fed_seconds", "fed_submit_peak_rss_bytes"} {
		if rep[k] <= 0 {
			t.Errorf("%s = %v, want a measurement\n%s", k, rep[k], stdout.String())
		}
	}
	if rep["lines"] != 300 || rep["line_bytes"] != 246 || rep["fed_most_unfinished"] > 30 {
		t.Errorf("report:\n%s", stdout.String())
	}
}

// A run with --batch-skip-drain says the drain was left out instead of
// printing a drain of 0 seconds.
func TestBatchReportWithoutDrain(t *testing.T) {
	var b bytes.Buffer
	r := &bench.BatchReport{Lines: 10, LineBytes: 246, Workers: 2, SubmitSeconds: 1, SubmitLinesPerSec: 10, BytesPerPending: 591,
		MaxPending: 5, FedSeconds: 2, FedTasksPerSec: 5}
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "drain by the workers            left out (--batch-skip-drain)\n") || strings.Contains(b.String(), "bytes per finished") {
		t.Fatalf("report:\n%s", b.String())
	}
	r.DrainSeconds, r.BytesPerFinished = 4, 500
	b.Reset()
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "drain by the workers            4.0 s   2 tasks/s\netcd bytes per finished task    500\n") {
		t.Fatalf("report:\n%s", b.String())
	}
}
