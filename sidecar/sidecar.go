// Package sidecar assembles a Baton sidecar: the etcd connection and
// lease, the work queue dispatcher and the socket server. See
// docs/architecture.md for how the parts fit together and DESIGN.md for
// the contract.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/internal/etcdutil"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of Config.
const (
	DefaultTTL   = 10 * time.Second
	DefaultGrace = 10 * time.Second
)

// Config is everything a sidecar needs. CLI flags and BATON_* variables
// map one to one onto it.
type Config struct {
	Etcd etcdutil.Config
	// Socket is the Unix socket path to serve on. Required.
	Socket string
	// SocketMode is the socket file's mode. Default 0660.
	SocketMode os.FileMode
	// Queues the sidecar serves by default (Next and Submit without a
	// queue).
	Queues []string
	// TTL of the sidecar's etcd lease: how long after the sidecar dies or is
	// cut off its claims return to the queue. Default 10s.
	TTL time.Duration
	// WorkerID names the sidecar in claims and the registry. Default
	// hostname-pid.
	WorkerID string
	// Labels are shown in the registry (`baton workers list`), for example
	// gpu=a100 or model=indextts2.
	Labels map[string]string
	// Version is the build's version, shown in the registry.
	Version string
	// Grace is how long shutdown waits for workers to answer the claims in
	// hand before giving them back. Default 10s.
	Grace time.Duration
	// Queue tunes the work queue.
	Queue workqueue.Config
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.SocketMode == 0 {
		c.SocketMode = 0o660
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.WorkerID == "" {
		h, _ := os.Hostname()
		c.WorkerID = h + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Queue.Logger == nil {
		c.Queue.Logger = c.Logger
	}
}

// Validate reports the first field that is wrong.
func (c *Config) Validate() error {
	if c.Socket == "" {
		return errors.New("socket: a socket path is required")
	}
	if len(c.Socket) > 100 {
		return fmt.Errorf("socket: %q is %d bytes; Unix socket paths must be under 104", c.Socket, len(c.Socket))
	}
	for i, q := range c.Queues {
		if err := workqueue.ValidateQueue(q); err != nil {
			return fmt.Errorf("queue[%d]: %w", i, err)
		}
	}
	if c.TTL < 0 || c.TTL > 0 && c.TTL < time.Second {
		return fmt.Errorf("ttl: %v is shorter than 1s", c.TTL)
	}
	if c.Grace < 0 {
		return errors.New("grace: must not be negative")
	}
	if err := workqueue.ValidateID(c.WorkerID); c.WorkerID != "" && err != nil {
		return fmt.Errorf("worker-id: %w", err)
	}
	return c.Queue.Validate()
}

// Sidecar is a running sidecar.
type Sidecar struct {
	cfg      Config
	cli      *clientv3.Client
	ready    chan struct{}
	Sessions *coord.Sessions

	mu         sync.Mutex
	dispatcher *workqueue.Dispatcher
}

// New checks cfg and returns a sidecar; Run starts it.
func New(cfg Config) (*Sidecar, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Sidecar{cfg: cfg, ready: make(chan struct{}), Sessions: coord.NewSessions()}, nil
}

// Ready is closed once the socket serves.
func (s *Sidecar) Ready() <-chan struct{} { return s.ready }

// Dispatcher returns the work queue dispatcher once Ready.
func (s *Sidecar) Dispatcher() *workqueue.Dispatcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dispatcher
}

// Run serves until ctx is cancelled, then shuts down gracefully: it stops
// handing out tasks, waits up to Config.Grace for the claims in hand to be
// answered, gives back the rest at once, closes the socket and revokes the
// lease.
func (s *Sidecar) Run(ctx context.Context) error {
	cfg := s.cfg
	log := cfg.Logger
	ln, err := server.Listen(cfg.Socket, cfg.SocketMode)
	if err != nil {
		return err
	}
	defer ln.Close()

	cli, err := etcdutil.New(cfg.Etcd)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	s.cli = cli

	store, err := workqueue.NewStore(cli.KV, cfg.Queue)
	if err != nil {
		return err
	}
	lease := coord.NewLeaseKeeper(cli, cfg.TTL, log)
	leaseCtx, stopLease := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); _ = lease.Run(leaseCtx) }()
	defer func() { stopLease(); bg.Wait() }()

	d := workqueue.NewDispatcher(store, cli.KV, cli.Watcher, lease, s.Sessions, cfg.WorkerID)
	d.Start()
	defer d.Stop()
	s.mu.Lock()
	s.dispatcher = d
	s.mu.Unlock()

	host, _ := os.Hostname()
	reg := registry.New(cli.KV, lease, registry.Config{
		Entry: registry.Entry{
			WorkerID: cfg.WorkerID, Host: host, PID: os.Getpid(), Queues: cfg.Queues,
			Labels: cfg.Labels, Version: cfg.Version, StartedMS: time.Now().UnixMilli(),
		},
		InHand:  d.HeldCount,
		Changed: d.HeldChanged(),
		Logger:  log,
	})
	regCtx, stopReg := context.WithCancel(context.Background())
	bg.Add(1)
	go func() { defer bg.Done(); reg.Run(regCtx) }()
	defer stopReg()

	tasks := &server.TaskHandler{Dispatcher: d, Store: store, Sessions: s.Sessions, Queues: cfg.Queues, Logger: log}
	handlerCtx, cancelHandlers := context.WithCancel(context.Background())
	defer cancelHandlers()
	srv := server.HTTPServer(server.Handler(tasks, []connect.HandlerOption{connect.WithReadMaxBytes(4 << 20)}), handlerCtx)
	serveErr := make(chan error, 1)
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	close(s.ready)
	log.Info("sidecar serving", "socket", cfg.Socket, "queues", cfg.Queues, "worker_id", cfg.WorkerID, "ttl", cfg.TTL)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error("socket server failed", "err", err)
	}

	// Graceful shutdown.
	log.Info("sidecar stopping", "held", d.HeldCount(), "grace", cfg.Grace)
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), cfg.Grace)
	d.Drain(graceCtx)
	cancelGrace()
	cancelHandlers() // ends Attach streams and long polls
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 2*time.Second)
	if srv.Shutdown(closeCtx) != nil {
		srv.Close()
	}
	cancelClose()
	revokeCtx, cancelRevoke := context.WithTimeout(context.Background(), 2*time.Second)
	if err := lease.Revoke(revokeCtx); err != nil {
		log.Warn("revoking lease failed; its keys go when it expires", "err", err)
	}
	cancelRevoke()
	st := d.Stats()
	log.Info("sidecar stopped", "claims", st.Claims, "conflicts", st.Conflicts, "requeued", st.Requeued, "expired", st.Expired)
	return err
}
