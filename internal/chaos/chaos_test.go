package chaos

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The scenario re-executes this test binary as etcd members, sidecars
	// and workers.
	RunRole()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run")); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// TestChaosShort is the short scenario of `make test`: about half a minute
// of faults of every kind against three etcd members, two sidecars and
// four workers, then the checker. BATON_CHAOS_SEED replays a seed.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos scenario skipped in -short mode")
	}
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("BATON_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("BATON_CHAOS_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay with BATON_CHAOS_SEED=%d)", seed, seed)
	var log strings.Builder
	res, err := Run(context.Background(), Config{
		Seed: seed, Exe: childproc.Exe{Path: os.Args[0], Args: []string{"-test.run=^$"}}, Dir: t.TempDir(),
		Sidecars: 2, WorkersPer: 2, Tasks: 40, Duration: 30 * time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("seed %d: %v\n%s", seed, err, log.String())
	}
	var sum strings.Builder
	res.WriteSummary(&sum)
	t.Log("\n" + log.String() + sum.String())
	if res.Failed() {
		t.Fatalf("seed %d broke an invariant", seed)
	}
	if res.Submitted-res.Probes != 40 || len(res.Faults) == 0 {
		t.Fatalf("submitted %d tasks and injected %d faults; want 40 and some", res.Submitted-res.Probes, len(res.Faults))
	}
}
