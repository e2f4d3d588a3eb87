package sidecar_test

import (
	"context"
	"flag"
	"os"
	"sync"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/urfave/cli/v2"
)

// endpoint is the etcd shared by the tests of this package; each test
// works in its own namespace.
var endpoint string

// cliMu makes the in-process runs of the command line take turns:
// urfave/cli writes its global HelpFlag on every run, which the race
// detector reports when parallel tests run it at once. A test whose run
// lasts the whole test (a watch) is not parallel instead.
var cliMu sync.Mutex

// runCLI runs app with args in the process, one run at a time.
func runCLI(ctx context.Context, app *cli.App, args []string) error {
	cliMu.Lock()
	defer cliMu.Unlock()
	return app.RunContext(ctx, args)
}

func TestMain(m *testing.M) {
	// The tests re-execute this binary as worker and sidecar processes that
	// they can kill with SIGKILL.
	switch os.Getenv("BATON_TEST_ROLE") {
	case "worker":
		runWorkerRole()
		return
	case "sidecar":
		runSidecarRole()
		return
	case "locker":
		runLockerRole()
		return
	case "lock-sidecar":
		runLockSidecarRole()
		return
	case "submit":
		runSubmitRole()
		return
	}
	// The tests of this package wait on etcd, timers and child processes
	// far more than they compute (a run's CPU time is about a quarter of
	// its wall time), so by default 4 run at once whatever GOMAXPROCS is;
	// go test -parallel N overrides it. Tests with real-time margins (a
	// heartbeat against a task's timeout) are not parallel.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(sidecartest.RunWithEtcd(m, &endpoint))
}
