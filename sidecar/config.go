package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/ui"
	"github.com/batonhq/baton/sidecar/workqueue"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Defaults of Config.
const (
	DefaultTTL            = 10 * time.Second
	DefaultGrace          = 10 * time.Second
	DefaultMaxConnections = 256
)

// Config is everything a sidecar needs. CLI flags and BATON_* variables
// map one to one onto it.
type Config struct {
	// Etcd says how to reach etcd (endpoints, TLS, auth) and the
	// deployment's namespace; Endpoints and Namespace are required.
	Etcd etcdconn.Config
	// Socket is the Unix socket path to serve on. Required.
	Socket string
	// SocketMode is the socket file's mode. Default 0660.
	SocketMode os.FileMode
	// SocketGroup is the socket file's group, a name or a number. Default:
	// the sidecar's own group.
	SocketGroup string
	// AllowUIDs and AllowGIDs say which local users may use the socket,
	// checked on every connection from the peer's credentials
	// (SO_PEERCRED; the peer's primary group): a connection whose uid is
	// in AllowUIDs or whose gid is in AllowGIDs is served, any other
	// closed and counted. Default: the sidecar's own uid, and the socket's
	// group.
	AllowUIDs []uint32
	AllowGIDs []uint32
	// Queues the sidecar serves: the only queues Next takes from (any
	// other is refused, PERMISSION_DENIED), its default, and, the first
	// of them, the queue of a submitted task that names none. At most
	// 16 (workqueue.MaxQueuesPerNext: a Next without queues names them
	// all).
	Queues []string
	// SubmitQueues are the queues Submit may write to; any other is
	// refused (PERMISSION_DENIED). server.AnyQueue ("*") allows every
	// queue. Default: Queues.
	SubmitQueues []string
	// TTL of the sidecar's etcd lease: how long after the sidecar dies or is
	// cut off its claims return to the queue. Default 10s.
	TTL time.Duration
	// WorkerID names the worker this sidecar serves (one sidecar per
	// worker) in claims, lock owners, the registry and spans. Default
	// hostname-pid. The processes of the worker name themselves when they
	// attach (AttachRequest.process).
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
	// EtcdQuotaBytes is etcd's --quota-backend-bytes: Submit is refused
	// with a workqueue.QuotaError once etcd's database passes
	// workqueue.DefaultSubmitHighWater of it (unless Queue.Admission is
	// set). Default workqueue.DefaultQuotaBytes (2 GiB, etcd's default).
	EtcdQuotaBytes int64
	// Logger receives diagnostics. Default: discard. Lines logged while
	// serving a socket call carry the caller's peer_uid and peer_pid
	// (New wraps the handler with telemetry.CallerHandler). Wrap its
	// handler with telemetry.LogHandler to get trace ids on lines logged
	// inside a span.
	Logger *slog.Logger
	// AdminToken, when set, is required on the admin server's /metrics as
	// a bearer token (telemetry.AdminConfig.Token).
	AdminToken string
	// AdminAddr is host:port of the admin HTTP server: /metrics, /healthz
	// and /readyz (see telemetry.Admin). Empty: no admin server. Port 0
	// picks a free port (Sidecar.AdminAddr tells which).
	AdminAddr string
	// AdminCert and AdminKey, when set, make the admin server serve HTTPS
	// with this certificate and key, re-read when the files change
	// (telemetry.AdminConfig.CertFile). AdminClientCA makes /metrics
	// require a client certificate of these CAs.
	AdminCert, AdminKey, AdminClientCA string
	// UI serves the operator's web page at /ui/ on the admin server
	// (package ui). Needs AdminAddr.
	UI bool
	// UIActions says whether the page may retry, cancel, pause and
	// resume: ui.ActionsAuto (default: only when AdminAddr is a loopback
	// address), ui.ActionsOn or ui.ActionsOff.
	UIActions string
	// TracerProvider makes the sidecar's spans: one per socket call
	// (otelconnect), the claim, answer and requeue spans of tasks. Default:
	// a no-op provider. telemetry.NewTracerProvider builds one from the
	// OTEL_* variables.
	TracerProvider trace.TracerProvider
	// SocketTimeouts bound how long the socket server waits for a caller
	// (reading a request; an idle connection). Defaults 30s and 2m.
	SocketTimeouts server.Timeouts
	// MaxConnections bounds the socket's open connections; more are closed
	// at accept and counted. Default 256.
	MaxConnections int
	// Metrics receives the sidecar's metrics. Default: a new
	// telemetry.Metrics (its own registry). One Metrics serves one
	// sidecar.
	Metrics *telemetry.Metrics
}

// DefaultWorkerID is the worker id of a sidecar that is not given one:
// hostname-pid.
func DefaultWorkerID() string {
	h, _ := os.Hostname()
	return h + "-" + strconv.Itoa(os.Getpid())
}

func (c *Config) setDefaults() {
	if c.SocketMode == 0 {
		c.SocketMode = 0o660
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if len(c.SubmitQueues) == 0 {
		c.SubmitQueues = c.Queues
	}
	if c.WorkerID == "" {
		c.WorkerID = DefaultWorkerID()
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = slog.New(telemetry.CallerHandler(c.Logger.Handler()))
	if c.Queue.Logger == nil {
		c.Queue.Logger = c.Logger
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	if c.Queue.TracerProvider == nil {
		c.Queue.TracerProvider = c.TracerProvider
	}
	if c.Metrics == nil {
		c.Metrics = telemetry.NewMetrics(telemetry.MetricsConfig{Version: c.Version})
	}
	if c.Queue.Observer == nil {
		c.Queue.Observer = c.Metrics
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
	if len(c.Queues) > workqueue.MaxQueuesPerNext {
		return fmt.Errorf("queue: %d queues, over the limit of %d (a Next without queues takes from all of them)", len(c.Queues), workqueue.MaxQueuesPerNext)
	}
	for i, q := range c.SubmitQueues {
		if err := workqueue.ValidateQueue(q); q != server.AnyQueue && err != nil {
			return fmt.Errorf("submit-queue[%d]: %w (or %q for any queue)", i, err, server.AnyQueue)
		}
	}
	if c.TTL < 0 || c.TTL > 0 && c.TTL < time.Second {
		return fmt.Errorf("ttl: %v is shorter than 1s", c.TTL)
	}
	if c.Grace < 0 {
		return errors.New("grace: must not be negative")
	}
	if c.MaxConnections < 0 {
		return errors.New("max-connections: must not be negative")
	}
	if c.SocketTimeouts.Read < 0 || c.SocketTimeouts.Idle < 0 {
		return errors.New("socket-read-timeout, socket-idle-timeout: must not be negative")
	}
	if err := workqueue.ValidateLabels(c.Labels); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if err := workqueue.ValidateID(c.WorkerID); c.WorkerID != "" && err != nil {
		return fmt.Errorf("worker-id: %w", err)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			return fmt.Errorf("admin-addr: %q is not host:port: %w", c.AdminAddr, err)
		}
	}
	switch {
	case (c.AdminCert == "") != (c.AdminKey == ""):
		return errors.New("admin-cert, admin-key: give both (a certificate and its key) or neither")
	case c.AdminClientCA != "" && c.AdminCert == "":
		return errors.New("admin-client-cacert: needs --admin-cert and --admin-key (client certificates are checked over TLS only)")
	case c.AdminCert != "" && c.AdminAddr == "":
		return errors.New("admin-cert: the admin server is off (--admin-addr is empty)")
	case c.UI && c.AdminAddr == "":
		return errors.New("ui: the page is served by the admin server, which is off (--admin-addr is empty)")
	}
	if _, _, err := ui.ActionsFor(c.UIActions, c.AdminAddr); c.UI && err != nil {
		return err
	}
	return c.Queue.Validate()
}
