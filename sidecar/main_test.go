package sidecar_test

import (
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
	os.Exit(sidecartest.RunWithEtcd(m, &endpoint))
}
