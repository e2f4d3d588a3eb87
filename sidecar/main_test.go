package sidecar_test

import (
	"flag"
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
)

// endpoint is the etcd shared by the tests of this package; each test
// works in its own namespace.
var endpoint string

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
