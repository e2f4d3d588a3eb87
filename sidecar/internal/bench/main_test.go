package bench_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/batoncli"
	"go.uber.org/goleak"
)

// roleEnv makes a re-executed test binary act as `baton` with its
// arguments: the bench starts its sidecar processes that way.
const roleEnv = "BATON_BENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "baton" {
		err := batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), append([]string{"baton"}, os.Args[1:]...))
		if err != nil {
			fmt.Fprintln(os.Stderr, "baton:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
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
