// Package embedetcd runs a single-member etcd server inside the process,
// for `baton dev`, `baton bench` and tests.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/batonhq/baton/sidecar/internal/etcdauth"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config configures an embedded etcd. The zero value listens on a free
// port of 127.0.0.1 with data in a new temporary directory.
type Config struct {
	// Dir holds the data. Empty: a temporary directory removed by Close.
	Dir string
	// ClientAddr is host:port to serve clients on. Default 127.0.0.1:0 (a
	// free port).
	ClientAddr string
	// AutoCompactionRetention keeps this much history (periodic mode:
	// etcd compacts every retention period, or hourly past 1h). Default
	// 10m: history is what a drain of a big batch writes on top of its
	// pending tasks, and the quota must hold it (docs/operations.md).
	AutoCompactionRetention time.Duration
	// QuotaBackendBytes is etcd's --quota-backend-bytes. Default 0:
	// etcd's default, 2 GiB.
	QuotaBackendBytes int64
	// LogFile receives etcd's own log; empty discards all but errors to
	// stderr.
	LogFile string
	// MaxTxnOps is the server's --max-txn-ops. Default 128.
	MaxTxnOps uint
	// RootPassword, when set, turns etcd's authentication on with a user
	// "root" of this password (kept when the data directory was set up
	// before: its password must be the same). Clients then need it.
	RootPassword string
	// BcryptCost is the cost of the password hashes that authentication
	// checks (etcd's --bcrypt-cost). Default etcd's, 10; tests lower it
	// to 4, since each check costs tens of milliseconds of CPU at 10.
	BcryptCost uint
}

// Server is a running embedded etcd.
type Server struct {
	etcd    *embed.Etcd
	tempDir string
}

// Start starts etcd and waits until it serves or ctx ends.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	s := &Server{}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "baton-etcd-")
		if err != nil {
			return nil, err
		}
		dir, s.tempDir = d, d
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:0"
	}
	ec := embed.NewConfig()
	ec.Name = "baton"
	ec.Dir = filepath.Join(dir, "etcd")
	cu, err := url.Parse("http://" + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client address %q: %w", cfg.ClientAddr, err)
	}
	// A single member needs a peer URL but no peer ever dials it.
	pu, _ := url.Parse("http://127.0.0.1:0")
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	ec.AutoCompactionMode = "periodic"
	ret := cfg.AutoCompactionRetention
	if ret == 0 {
		ret = 10 * time.Minute
	}
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.AutoCompactionRetention = ret.String()
	if cfg.BcryptCost > 0 {
		ec.BcryptCost = cfg.BcryptCost
	}
	if cfg.MaxTxnOps > 0 {
		ec.MaxTxnOps = cfg.MaxTxnOps
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if cfg.LogFile != "" {
		ec.ZapLoggerBuilder = nil
		ec.LogLevel = "info"
		ec.LogOutputs = []string{cfg.LogFile}
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("embedetcd: %w", err)
	}
	s.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		if cfg.RootPassword != "" {
			if err := s.enableAuth(ctx, cfg.RootPassword); err != nil {
				s.Close()
				return nil, err
			}
		}
		return s, nil
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("embedetcd: %w", err)
	case <-ctx.Done():
		s.Close()
		return nil, errors.Join(errors.New("embedetcd: not ready"), ctx.Err())
	}
}

// Endpoint returns the client address, host:port.
func (s *Server) Endpoint() string { return s.etcd.Clients[0].Addr().String() }

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd and removes a temporary data directory.
func (s *Server) Close() {
	if s.etcd != nil {
		s.etcd.Close()
	}
	s.removeTemp()
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}

// enableAuth creates the root user and role and turns authentication on,
// unless it is on already (a data directory set up before), in which case
// it checks that password is root's.
func (s *Server) enableAuth(ctx context.Context, password string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("embedetcd: auth: %w", err)
	}
	defer cli.Close()
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("embedetcd: auth status: %w", err)
	}
	if st.Enabled {
		root, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second,
			Username: "root", Password: password, Logger: zap.NewNop()})
		if err == nil {
			_, err = root.Get(ctx, "x", clientv3.WithCountOnly())
			root.Close()
		}
		if err != nil {
			return fmt.Errorf("embedetcd: this data directory's etcd has authentication on, and root's password is not the one given: %w", err)
		}
		return nil
	}
	if err := etcdauth.EnableAuth(ctx, cli, password); err != nil {
		return fmt.Errorf("embedetcd: %w", err)
	}
	return nil
}
