package telemetry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: Check returns nil while it holds.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// AdminConfig configures the admin HTTP server.
type AdminConfig struct {
	// Addr is host:port to listen on (port 0: any free port). Required.
	Addr string
	// Gatherer is served on /metrics.
	Gatherer prometheus.Gatherer
	// Ready are the conditions of /readyz, checked in order on each
	// request.
	Ready []Check
	// CheckTimeout bounds each readiness check. Default 1s.
	CheckTimeout time.Duration
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Token, when set, is required on /metrics as "Authorization: Bearer
	// <token>" (compared in constant time); /healthz and /readyz stay
	// open for probes and say nothing beyond ok or not.
	Token string
}

// Admin is the sidecar's admin HTTP server:
//
//	/metrics  Prometheus text format of Gatherer
//	/healthz  200 "ok" while the process serves HTTP (liveness)
//	/readyz   200 when every Ready check passes, else 503; the body has
//	          one line per check ("[+]etcd ok", "[-]lease failed: ...")
//
// It runs one goroutine between Start and Stop.
type Admin struct {
	cfg  AdminConfig
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// NewAdmin returns an admin server; Start starts it.
func NewAdmin(cfg AdminConfig) *Admin {
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Admin{cfg: cfg}
	a.srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return a
}

// Handler returns the server's HTTP handler.
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	if a.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", a.guard(promhttp.HandlerFor(a.cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{a.cfg.Logger}})))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	return mux
}

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	ok := true
	for _, c := range a.cfg.Ready {
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CheckTimeout)
		err := c.Check(ctx)
		cancel()
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.Name, err)
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		b.WriteString("not ready\n")
	} else {
		b.WriteString("ready\n")
	}
	_, _ = w.Write([]byte(b.String()))
}

// Start listens on Addr and serves in a goroutine until Stop. An address
// in use is an error, returned at once.
func (a *Admin) Start() error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin-addr %s: %w", a.cfg.Addr, err)
	}
	a.ln = ln
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.cfg.Logger.Error("admin server failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return nil
}

// Addr returns the address the server listens on, after Start.
func (a *Admin) Addr() net.Addr {
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// Stop stops the server: it waits for requests in progress until ctx ends,
// then closes what is left, and returns when the serving goroutine has
// exited.
func (a *Admin) Stop(ctx context.Context) error {
	if a.done == nil {
		return nil
	}
	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	return err
}

// slogPrinter adapts a logger to promhttp's ErrorLog.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("serving metrics failed", "err", fmt.Sprint(v...)) }

// guard requires the bearer token on h when one is configured.
func (a *Admin) guard(h http.Handler) http.Handler {
	if a.cfg.Token == "" {
		return h
	}
	want := []byte("Bearer " + a.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "a bearer token is required (--admin-token-file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
