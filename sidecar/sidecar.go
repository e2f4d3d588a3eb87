// Package sidecar assembles a Baton sidecar: the etcd connection and
// lease, the work queue dispatcher and the socket server. See
// docs/architecture.md for how the parts fit together and DESIGN.md for
// the contract.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/ui"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
)

// Sidecar is a running sidecar.
type Sidecar struct {
	cfg      Config
	cli      *clientv3.Client
	ready    chan struct{}
	Sessions *coord.Sessions

	mu         sync.Mutex
	dispatcher *workqueue.Dispatcher
	adminAddr  net.Addr
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

// AdminAddr returns the address of the admin HTTP server once Ready, or
// nil when there is none.
func (s *Sidecar) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

// Metrics returns the sidecar's metrics.
func (s *Sidecar) Metrics() *telemetry.Metrics { return s.cfg.Metrics }

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
	m := cfg.Metrics
	tracing, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(cfg.TracerProvider),
		otelconnect.WithPropagator(propagation.TraceContext{}),
		otelconnect.WithTrustRemote(), // the socket's peers are local workers
		otelconnect.WithoutMetrics(),  // metrics are Prometheus, on the admin address
	)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	gid, err := socketGID(cfg.SocketGroup)
	if err != nil {
		return err
	}
	sock, err := server.Listen(cfg.Socket, cfg.SocketMode, gid)
	if err != nil {
		return err
	}
	defer sock.Close()
	ln := server.LimitConns(sock, cfg.MaxConnections)
	ln.Policy = peerPolicy(cfg, gid)
	ln.OnRefused = func(p server.Peer) {
		log.Warn("socket connection refused: its user is not allowed (--allow-uid, --allow-gid)", "peer_uid", p.UID, "peer_gid", p.GID, "peer_pid", p.PID)
	}

	ecfg := cfg.Etcd
	ecfg.DialOptions = append(append([]grpc.DialOption(nil), ecfg.DialOptions...), m.EtcdDialOptions()...)
	if ecfg.Logger == nil {
		ecfg.Logger = log
	}
	cli, err := etcdconn.New(ecfg)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	s.cli = cli

	// The scheduler logs and counts operator actions for its term.
	follower := &audit.Follower{KV: cli.KV, Watcher: cli.Watcher, Logger: log, Observe: func(r audit.Record) { m.OperatorAction(r.Action) }}
	qcfg := cfg.Queue
	qcfg.SchedulerDuties = append(qcfg.SchedulerDuties[:len(qcfg.SchedulerDuties):len(qcfg.SchedulerDuties)], follower.Run)
	if qcfg.Admission == nil {
		adm, err := workqueue.NewAdmission(workqueue.AdmissionConfig{Maintenance: cli.Maintenance, Endpoints: ecfg.Endpoints, QuotaBytes: cfg.EtcdQuotaBytes})
		if err != nil {
			return err
		}
		qcfg.Admission = adm
	}
	store, err := workqueue.NewStore(cli.KV, qcfg)
	if err != nil {
		return err
	}
	lease := coord.NewLeaseKeeper(cli, cfg.TTL, log)

	// The admin server starts before anything is written to etcd, so that
	// an address in use fails the start cleanly. /readyz says not ready
	// until the socket serves and the lease is granted.
	var draining, serving atomic.Bool
	probe := probes{cli: cli, lease: lease, socket: cfg.Socket, draining: &draining, serving: &serving}
	if cfg.AdminAddr != "" {
		var page *ui.UI
		if cfg.UI {
			if page, err = newUI(cfg, cli, store); err != nil {
				return err
			}
		}
		acfg := telemetry.AdminConfig{
			Addr:     cfg.AdminAddr,
			Gatherer: m.Registry(),
			Ready:    probe.checks(),
			Logger:   log,
			Token:    cfg.AdminToken,
			CertFile: cfg.AdminCert, KeyFile: cfg.AdminKey, ClientCAFile: cfg.AdminClientCA,
		}
		paths := "/metrics /healthz /readyz"
		if page != nil {
			acfg.UI = page.Handler()
			paths += " /ui/"
		}
		admin := telemetry.NewAdmin(acfg)
		if err := admin.Start(); err != nil {
			return err
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = admin.Stop(ctx)
		}()
		if page != nil {
			// Stopped before the admin server, so that the page's
			// live-update streams end and do not hold its shutdown.
			uiCtx, stopUI := context.WithCancel(context.Background())
			uiDone := make(chan struct{})
			go func() { defer close(uiDone); page.Run(uiCtx) }()
			defer func() { stopUI(); <-uiDone }()
		}
		s.mu.Lock()
		s.adminAddr = admin.Addr()
		s.mu.Unlock()
		log.Info("admin serving", "addr", admin.Addr().String(), "tls", cfg.AdminCert != "", "paths", paths)
	}

	leaseCtx, stopLease := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); _ = lease.Run(leaseCtx) }()
	defer func() { stopLease(); bg.Wait() }()

	d := workqueue.NewDispatcher(store, cli.KV, cli.Watcher, lease, s.Sessions, cfg.WorkerID, cfg.Labels)
	d.Track(cfg.Queues...)
	d.Start()
	defer d.Stop()
	m.Queues(cfg.Queues...)
	if err := m.Watch(telemetry.SidecarStats{
		ClaimsHeld:         d.HeldCount,
		SessionsOpen:       s.Sessions.Len,
		SessionsOpened:     s.Sessions.Opened,
		LeaseLost:          func() int64 { return lease.Stats().Lost },
		LeaseGrantFailures: func() int64 { return lease.Stats().GrantFailures },
		Scheduler: func() int {
			if d.Leading() {
				return 1
			}
			return 0
		},
		SchedulerTerms: func() int64 { return d.Stats().Terms },
		Connections:    ln.Open,
		ConnsRefused:   ln.Refused,
		ConnsDenied:    ln.Denied,
		AnswersRefused: func() int64 { return d.Stats().Refused },
		Malformed:      func() int64 { return d.Stats().Malformed },
		Assigned:       func() int64 { return d.Stats().Assigned },
		EtcdDBSize: func() int64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, _ := store.Config().Admission.DBSize(ctx)
			return n
		},
		EtcdQuota: store.Config().Admission.Quota,
	}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.mu.Lock()
	s.dispatcher = d
	s.mu.Unlock()

	host, _ := os.Hostname()
	reg := registry.New(cli.KV, lease, registry.Config{
		Entry: registry.Entry{
			WorkerID: cfg.WorkerID, Host: host, PID: os.Getpid(), Queues: cfg.Queues,
			Labels: cfg.Labels, Version: cfg.Version, StartedMS: time.Now().UnixMilli(),
		},
		Sessions: s.Sessions,
		Logger:   log,
	})
	regCtx, stopReg := context.WithCancel(context.Background())
	bg.Add(1)
	go func() { defer bg.Done(); reg.Run(regCtx) }()
	defer stopReg()

	opts := append([]connect.HandlerOption{connect.WithReadMaxBytes(4 << 20), connect.WithInterceptors(tracing, server.LogInternal(log))}, server.JSONCodecs()...)
	locks := namedlock.New(cli, namedlock.Config{TTL: cfg.TTL, WorkerID: cfg.WorkerID, Logger: log, Observer: m, TracerProvider: cfg.TracerProvider})
	defer locks.Close()
	svcs := server.Services{
		Tasks: &server.TaskHandler{Dispatcher: d, Store: store, Sessions: s.Sessions, Logger: log, Metrics: m,
			Scope: server.Scope{Serve: cfg.Queues, Submit: cfg.SubmitQueues}},
		Locks: &server.LockHandler{Locks: locks, Sessions: s.Sessions, Logger: log},
		Config: &server.ConfigHandler{Store: configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{}), Logger: log,
			TracerProvider: cfg.TracerProvider},
	}
	handlerCtx, cancelHandlers := context.WithCancel(context.Background())
	defer cancelHandlers()
	health := server.HealthChecker{Ready: probe.serve}
	srv := server.HTTPServer(server.Handler(svcs, opts, server.Health(health, opts...)), handlerCtx, cfg.SocketTimeouts)
	serveErr := make(chan error, 1)
	serving.Store(true)
	bg.Add(1)
	go func() {
		defer bg.Done()
		defer serving.Store(false)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	close(s.ready)
	log.Info("sidecar serving", "socket", cfg.Socket, "queues", cfg.Queues, "submit_queues", cfg.SubmitQueues, "worker_id", cfg.WorkerID, "ttl", cfg.TTL)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error("socket server failed", "err", err)
	}

	// Graceful shutdown. /readyz and the health service say not ready from
	// here on.
	draining.Store(true)
	log.Info("sidecar stopping", "held", d.HeldCount(), "grace", cfg.Grace)
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), cfg.Grace)
	d.Drain(graceCtx)
	cancelGrace()
	stopServing(srv, cancelHandlers)
	revokeCtx, cancelRevoke := context.WithTimeout(context.Background(), 2*time.Second)
	if err := lease.Revoke(revokeCtx); err != nil {
		log.Warn("revoking lease failed; its keys go when it expires", "err", err)
	}
	cancelRevoke()
	st := d.Stats()
	log.Info("sidecar stopped", "claims", st.Claims, "conflicts", st.Conflicts, "requeued", st.Requeued, "expired", st.Expired)
	return err
}

// stopServing cancels the handlers' calls (Attach streams, long polls) and
// closes the socket server.
func stopServing(srv *http.Server, cancelHandlers context.CancelFunc) {
	cancelHandlers()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// socketGID resolves the socket's group (a name or a number); -1 when
// none is given.
func socketGID(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("socket-group: %w", err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket-group: %q has gid %q", group, g.Gid)
	}
	return n, nil
}

// peerPolicy is who may use the socket: the configured uids and gids, or
// by default the sidecar's own uid and the socket's group.
func peerPolicy(cfg Config, gid int) *server.PeerPolicy {
	p := &server.PeerPolicy{UIDs: cfg.AllowUIDs, GIDs: cfg.AllowGIDs}
	if len(p.UIDs) == 0 && len(p.GIDs) == 0 {
		if gid < 0 {
			gid = os.Getgid()
		}
		p.UIDs = []uint32{uint32(os.Getuid())}
		p.GIDs = []uint32{uint32(gid)}
	}
	return p
}

// newUI builds the operator's web page of the sidecar (Config.UI).
func newUI(cfg Config, cli *clientv3.Client, store *workqueue.Store) (*ui.UI, error) {
	actions, why, err := ui.ActionsFor(cfg.UIActions, cfg.AdminAddr)
	if err != nil {
		return nil, err
	}
	return ui.New(ui.Config{
		KV: cli.KV, Watcher: cli.Watcher, Queue: store,
		Configs: configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{}),
		Actions: actions, ActionsOff: why, Token: cfg.AdminToken,
		Actor:  audit.LocalActor(cfg.Etcd.Username),
		Logger: cfg.Logger,
	})
}
