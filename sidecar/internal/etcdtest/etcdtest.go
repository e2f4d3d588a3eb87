// Package etcdtest runs a package's unit tests against one real embedded
// etcd, each test in a namespace of its own. It serves the packages that
// package sidecartest cannot (sidecartest imports them through the
// sidecar), so that their in-package tests need no mock of etcd.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

// endpoint is the etcd started by Main.
var endpoint string

// Main is a TestMain body: it starts an embedded etcd, runs the tests,
// stops the etcd and, when the tests passed, fails the run if goroutines
// were left behind (goleak with LeakOptions). It returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m)) }
func Main(m *testing.M) int { return Run(m, &endpoint) }

// Run is Main for a package that keeps the endpoint itself: it sets
// *endpoint before the tests run (sidecartest.RunWithEtcd is this).
func Run(m *testing.M, endpoint *string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s, err := embedetcd.Start(ctx, embedetcd.Config{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting etcd:", err)
		return 1
	}
	*endpoint = s.Endpoint()
	code := m.Run()
	s.Close()
	if code == 0 {
		if err := goleak.Find(LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// LeakOptions ignore the goroutines etcd's server and gRPC keep for the
// life of the process.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver.(*EtcdServer).publishV3"),
	}
}

var seq atomic.Int64

// Client returns a client of Main's etcd that sees only a namespace of the
// test's own; it is closed when the test ends.
func Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	return dial(tb, namespace(tb), []string{Endpoint(tb)})
}

// Endpoint returns the address of Main's etcd, for a test that puts a
// proxy in front of it (internal/faultproxy).
func Endpoint(tb testing.TB) string {
	tb.Helper()
	if endpoint == "" {
		tb.Fatal("etcdtest: no etcd; call etcdtest.Main from TestMain")
	}
	return endpoint
}

// ClientsVia returns two clients that see the same namespace of the test's
// own: direct dials Main's etcd, via dials endpoints (a proxy in front of
// it, whose faults then hit via alone). Both are closed when the test ends.
func ClientsVia(tb testing.TB, endpoints []string) (direct, via *clientv3.Client) {
	tb.Helper()
	ns := namespace(tb)
	return dial(tb, ns, []string{Endpoint(tb)}), dial(tb, ns, endpoints)
}

// namespace returns a new namespace for the test.
func namespace(tb testing.TB) string {
	ns := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, fmt.Sprintf("t%d-%s", seq.Add(1), tb.Name()))
	return ns[:min(len(ns), 64)]
}

func dial(tb testing.TB, ns string, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: endpoints, Namespace: ns})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}
