package sidecar_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
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
		if err := goleak.Find(leakOptions()...); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func leakOptions() []goleak.Option {
	return []goleak.Option{
		// etcd's embedded server and gRPC keep process-wide goroutines.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver.(*EtcdServer).publishV3"),
	}
}
