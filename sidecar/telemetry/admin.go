package telemetry

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/internal/tlsfile"
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
	// CertFile and KeyFile, when set, serve HTTPS instead of HTTP with
	// this certificate and key. Both files are read again on every new
	// connection and used when their contents changed, so a rotated
	// certificate is served without a restart (a replacement that does not
	// parse leaves the previous one in use, logged).
	CertFile string
	KeyFile  string
	// ClientCAFile, with CertFile, makes /metrics require a client
	// certificate signed by one of the CAs in this file (read again like
	// the certificate). /healthz and /readyz stay open to callers without
	// one (kubelet probes present none); a certificate that is presented
	// and not signed by these CAs fails the handshake.
	ClientCAFile string
	// UI, when set, is served at /ui/ (the operator's web page, package
	// ui; /ui redirects there). It checks the token itself (a browser
	// sends it as a session cookie); with ClientCAFile it needs the client
	// certificate like /metrics.
	UI http.Handler
}

// Admin is the sidecar's admin HTTP server (HTTPS with
// AdminConfig.CertFile):
//
//	/metrics  Prometheus text format of Gatherer
//	/healthz  200 "ok" while the process serves HTTP (liveness)
//	/readyz   200 when every Ready check passes, else 503; the body has
//	          one line per check ("[+]etcd ok", "[-]lease failed: ...")
//	/ui/      the operator's web page, when AdminConfig.UI is set
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
	a.srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (scanners, a client without the CA) and
		// the like, which net/http would print to stderr.
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
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
	if a.cfg.UI != nil {
		mux.Handle("/ui/", a.certGuard(a.cfg.UI))
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
	}
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
// in use or a certificate that does not load is an error, returned at
// once.
func (a *Admin) Start() error {
	tc, err := a.tlsConfig()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin-addr %s: %w", a.cfg.Addr, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
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

// tlsConfig returns the server's TLS settings, nil for plain HTTP.
func (a *Admin) tlsConfig() (*tls.Config, error) {
	switch {
	case (a.cfg.CertFile == "") != (a.cfg.KeyFile == ""):
		return nil, errors.New("admin-cert, admin-key: give both (a certificate and its key) or neither")
	case a.cfg.CertFile == "" && a.cfg.ClientCAFile != "":
		return nil, errors.New("admin-client-cacert: needs --admin-cert and --admin-key (client certificates are checked over TLS only)")
	case a.cfg.CertFile == "":
		return nil, nil
	}
	kp, err := tlsfile.LoadKeyPair(a.cfg.CertFile, a.cfg.KeyFile, a.cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("admin-cert, admin-key: %w", err)
	}
	tc := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: kp.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if a.cfg.ClientCAFile == "" {
		return tc, nil
	}
	cas, err := tlsfile.LoadCAPool(a.cfg.ClientCAFile, a.cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("admin-client-cacert: %w", err)
	}
	tc.ClientAuth = tls.VerifyClientCertIfGiven
	tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := cas.Pool()
		if err != nil {
			return nil, err
		}
		c := tc.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool
		return c, nil
	}
	return tc, nil
}

// slogPrinter adapts a logger to promhttp's ErrorLog.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("serving metrics failed", "err", fmt.Sprint(v...)) }

// certGuard requires on h the client certificate, when configured.
func (a *Admin) certGuard(h http.Handler) http.Handler {
	if a.cfg.ClientCAFile == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a client certificate is required (--admin-client-cacert)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// guard requires on h the client certificate and the bearer token, each
// when configured.
func (a *Admin) guard(h http.Handler) http.Handler {
	if a.cfg.Token == "" && a.cfg.ClientCAFile == "" {
		return h
	}
	want := []byte("Bearer " + a.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.ClientCAFile != "" && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "a client certificate is required (--admin-client-cacert)", http.StatusForbidden)
			return
		}
		if a.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "a bearer token is required (--admin-token-file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
