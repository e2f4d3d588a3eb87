// Package sidecartest starts real etcd servers and sidecars for tests, so
// that users can test their own worker code against the real thing.
package sidecartest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

// Etcd starts an embedded single-member etcd for the test and stops it
// when the test ends. It returns the client endpoint.
func Etcd(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		tb.Fatalf("starting etcd: %v", err)
	}
	tb.Cleanup(s.Close)
	return s.Endpoint()
}

var nsSeq atomic.Int64

// Namespace returns a key prefix no other test uses, so tests can share one
// etcd server and still not see each other's keys.
func Namespace(tb testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, tb.Name())
	ns := fmt.Sprintf("t%d-%d-%s", os.Getpid(), nsSeq.Add(1), name)
	return ns[:min(len(ns), 64)]
}

// Client returns an etcd client that sees only the namespace.
func Client(tb testing.TB, endpoint, ns string) *clientv3.Client {
	tb.Helper()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{endpoint}, Namespace: ns})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// SocketPath returns a short socket path in a new temporary directory
// (sun_path holds about 108 bytes, so t.TempDir's long paths do not do).
func SocketPath(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

// Sidecar is a sidecar running in the test process.
type Sidecar struct {
	*sidecar.Sidecar
	Socket string
	Client *client.Client

	cancel context.CancelFunc
	done   chan error
}

// Stop shuts the sidecar down gracefully and waits for it; calling it again
// does nothing.
func (s *Sidecar) Stop() error {
	s.cancel()
	err, ok := <-s.done
	if !ok {
		return nil
	}
	close(s.done)
	return err
}

// StartSidecar starts a sidecar on endpoint in namespace ns. cfg's Socket,
// Etcd and Logger are filled in when empty. The sidecar stops when the test
// ends.
func StartSidecar(tb testing.TB, endpoint, ns string, cfg sidecar.Config) *Sidecar {
	tb.Helper()
	if cfg.Socket == "" {
		cfg.Socket = SocketPath(tb)
	}
	if len(cfg.Etcd.Endpoints) == 0 {
		cfg.Etcd = etcdconn.Config{Endpoints: []string{endpoint}, Namespace: ns}
	}
	if cfg.Logger == nil && os.Getenv("BATON_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Second
	}
	sc, err := sidecar.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sidecar{Sidecar: sc, Socket: cfg.Socket, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- sc.Run(ctx) }()
	select {
	case <-sc.Ready():
	case err := <-s.done:
		cancel()
		tb.Fatalf("sidecar did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		tb.Fatal("sidecar did not start within 30s")
	}
	s.Client = client.New(cfg.Socket)
	tb.Cleanup(func() {
		s.Client.Close()
		if err := s.Stop(); err != nil {
			tb.Errorf("sidecar: %v", err)
		}
	})
	return s
}

// LeakOptions are the goleak options for a test binary that runs an
// embedded etcd: they ignore the goroutines etcd's server and gRPC keep for
// the life of the process. Use them in TestMain:
//
//	if err := goleak.Find(sidecartest.LeakOptions()...); err != nil { ... }
func LeakOptions() []goleak.Option { return etcdtest.LeakOptions() }

// RunWithEtcd is a TestMain body for a package whose tests share one
// embedded etcd: it starts the etcd, sets *endpoint, runs the tests, stops
// the etcd and, when the tests passed, fails the run if goroutines were
// left behind (goleak with LeakOptions). It returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }
func RunWithEtcd(m *testing.M, endpoint *string) int { return etcdtest.Run(m, endpoint) }
