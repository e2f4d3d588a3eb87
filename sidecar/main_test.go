package sidecar_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"go.uber.org/goleak"
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
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s, err := embedetcd.Start(ctx, embedetcd.Config{})
	cancel()
	if err != nil {
		panic(err)
	}
	endpoint = s.Endpoint()
	code := m.Run()
	s.Close()
	if code == 0 {
		if err := goleak.Find(sidecartest.LeakOptions()...); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}
