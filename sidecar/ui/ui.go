package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

//go:embed static
var static embed.FS

// Defaults.
const (
	DefaultMaxSubscribers = 16
	DefaultFlushInterval  = 250 * time.Millisecond
)

// Config configures the page.
type Config struct {
	// KV and Watcher are the deployment's namespaced etcd client.
	// Required.
	KV      clientv3.KV
	Watcher clientv3.Watcher
	// Queue is the work queue store the reads and actions go through.
	// Required.
	Queue *workqueue.Store
	// Configs is the config document store. Required.
	Configs *configdoc.Store
	// Actions allows the operator's actions (retry, cancel, pause,
	// resume). Off: the page only reads.
	Actions bool
	// ActionsOff says why actions are off, shown on the page.
	ActionsOff string
	// Token, when set, is required on every /ui/api/ call (bearer token
	// or the session cookie set by POST /ui/api/login).
	Token string
	// Actor is who the actions' audit records name: the sidecar's process
	// (audit.LocalActor). Via is filled in per request.
	Actor audit.Actor
	// MaxSubscribers bounds the pages following live updates at once.
	// Default DefaultMaxSubscribers.
	MaxSubscribers int
	// FlushInterval is how often changes are sent to the pages. Default
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Clock times the flushes, the rate samples, the keep-alive pings and
	// the watches' retries (D-time1). Default: the wall clock.
	Clock clockwork.Clock
}

func (c *Config) validate() error {
	switch {
	case c.KV == nil:
		return errors.New("ui: KV is required")
	case c.Watcher == nil:
		return errors.New("ui: Watcher is required")
	case c.Queue == nil:
		return errors.New("ui: Queue is required")
	case c.Configs == nil:
		return errors.New("ui: Configs is required")
	case c.MaxSubscribers < 0:
		return errors.New("ui: MaxSubscribers: must not be negative")
	case c.FlushInterval < 0:
		return errors.New("ui: FlushInterval: must not be negative")
	}
	if c.MaxSubscribers == 0 {
		c.MaxSubscribers = DefaultMaxSubscribers
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return nil
}

// UI serves the page. Handler serves requests; Run follows etcd for the
// counters and live updates. Create it with New.
type UI struct {
	cfg   Config
	csrf  string
	tally *workqueue.Tally
	hub   *hub
	rates *rates
}

// New returns the page's server.
func New(cfg Config) (*UI, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, csrf: hex.EncodeToString(b[:]), tally: workqueue.NewTally(cfg.KV, cfg.Watcher),
		hub: newHub(cfg.MaxSubscribers), rates: newRates()}
	u.tally.Logger, u.tally.Clock, u.tally.MaxTxnOps = cfg.Logger, cfg.Clock, cfg.Queue.Config().MaxTxnOps
	u.tally.OnChange = func(batch, queue, id string) {
		if id == "" {
			u.hub.mark("*")
			return
		}
		u.hub.mark("batches", "queues", "workers", "task:"+id)
		if batch != "" {
			u.hub.mark("batch:" + batch)
		}
	}
	return u, nil
}

// Handler returns the page's handler, to be mounted at /ui/ (it serves
// paths under /ui/ only).
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	files, _ := fs.Sub(static, "static")
	fileServer := http.StripPrefix("/ui/", http.FileServerFS(files))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		fileServer.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /ui/api/login", u.login)
	api := http.NewServeMux()
	api.HandleFunc("GET /ui/api/session", u.session)
	api.HandleFunc("GET /ui/api/batches", u.batches)
	api.HandleFunc("GET /ui/api/batch", u.batch)
	api.HandleFunc("GET /ui/api/task", u.task)
	api.HandleFunc("GET /ui/api/queues", u.queues)
	api.HandleFunc("GET /ui/api/workers", u.workers)
	api.HandleFunc("GET /ui/api/locks", u.locks)
	api.HandleFunc("GET /ui/api/config", u.config)
	api.HandleFunc("GET /ui/api/audit", u.auditLog)
	api.HandleFunc("GET /ui/api/events", u.events)
	api.Handle("POST /ui/api/tasks/{id}/{action}", u.action(u.taskAction))
	api.Handle("POST /ui/api/queues/{queue}/{action}", u.action(u.queueAction))
	mux.Handle("/ui/api/", u.authorized(api))
	return securityHeaders(mux)
}

// Run follows etcd (task counts, queues, workers, locks, config, audit)
// and sends live updates until ctx ends; then it ends every live-update
// stream and returns once its goroutines have.
func (u *UI) Run(ctx context.Context) {
	// The watches start from one revision read now, so that a change
	// made after Run began is not missed while they are being set up.
	var rev int64
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if resp, err := u.cfg.KV.Get(gctx, configdoc.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		rev = resp.Header.Revision
	}
	cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); u.tally.Run(ctx) }()
	for _, p := range watchedPrefixes {
		wg.Add(1)
		go func() { defer wg.Done(); u.follow(ctx, p, rev) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); u.flushLoop(ctx) }()
	<-ctx.Done()
	u.hub.close()
	wg.Wait()
}

// securityHeaders sets, on every response, a Content-Security-Policy that
// allows only the page's own files (no inline script or style), and
// forbids framing and sniffing.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// Action modes (baton sidecar --ui-actions).
const (
	ActionsAuto = "auto" // on when the admin address is a loopback address
	ActionsOn   = "on"
	ActionsOff  = "off"
)

// ActionsFor resolves an action mode for the admin address addr
// (host:port): whether actions are allowed and, when not, why.
func ActionsFor(mode, addr string) (bool, string, error) {
	switch mode {
	case ActionsOn:
		return true, "", nil
	case ActionsOff:
		return false, "the sidecar was started with --ui-actions=off", nil
	case ActionsAuto, "":
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false, "", fmt.Errorf("admin-addr: %q is not host:port: %w", addr, err)
		}
		if isLoopback(host) {
			return true, "", nil
		}
		return false, fmt.Sprintf("the admin address %s is reachable from other machines; start the sidecar with --ui-actions=on to allow them", addr), nil
	}
	return false, "", fmt.Errorf("ui-actions: %q is not auto, on or off", mode)
}

// isLoopback reports whether host names this machine only ("" and
// 0.0.0.0 listen on every interface, so they do not).
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
