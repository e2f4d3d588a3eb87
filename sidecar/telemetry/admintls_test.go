package telemetry_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/testcert"
	"github.com/batonhq/baton/sidecar/telemetry"
)

// tlsGet makes one request on a new connection, trusting ca and
// presenting cert (nil: none); it returns the status and the common name
// of the certificate the server showed.
func tlsGet(t *testing.T, addr, path, auth string, ca string, cert *testcert.Pair) (int, string, error) {
	t.Helper()
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c, err := tls.X509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+addr+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.TLS.PeerCertificates[0].Subject.CommonName, nil
}

// Hardening issue, the admin endpoint: optional TLS. The admin server
// serves HTTPS with the certificate of --admin-cert/--admin-key, serves a
// rotated certificate on new connections without a restart, and keeps the
// bearer token on /metrics.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir, "admin")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Server(t, "first").Write(t, certFile, keyFile)
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Version: "v-test"})
	a := telemetry.NewAdmin(telemetry.AdminConfig{Addr: "127.0.0.1:0", Gatherer: m.Registry(), Token: "s3cret", CertFile: certFile, KeyFile: keyFile})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	addr := a.Addr().String()

	tr := &http.Transport{DisableKeepAlives: true}
	if resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP is served")
		}
	}
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer s3cret", http.StatusOK},
	} {
		code, cn, err := tlsGet(t, addr, c.path, c.auth, ca.CertFile, nil)
		if err != nil || code != c.want || cn != "first" {
			t.Errorf("GET %s with %q: %d from %q (%v), want %d from first", c.path, c.auth, code, cn, err, c.want)
		}
	}

	// Rotation: the next connection gets the new certificate.
	ca.Server(t, "second").Write(t, certFile, keyFile)
	if code, cn, err := tlsGet(t, addr, "/healthz", "", ca.CertFile, nil); err != nil || code != http.StatusOK || cn != "second" {
		t.Fatalf("after rotation: %d from %q (%v), want 200 from second", code, cn, err)
	}
}

// With --admin-client-cacert, /metrics needs a client certificate of that
// CA (re-read when the file changes); probes without one still pass.
func TestAdminClientCertificates(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientA, clientB := testcert.NewCA(t, dir, "server"), testcert.NewCA(t, dir, "a"), testcert.NewCA(t, dir, "b")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "clients.pem")
	serverCA.Server(t, "admin").Write(t, certFile, keyFile)
	copyFile(t, clientA.CertFile, caFile)
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Version: "v-test"})
	a := telemetry.NewAdmin(telemetry.AdminConfig{Addr: "127.0.0.1:0", Gatherer: m.Registry(), CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	addr := a.Addr().String()
	fromA, fromB := clientA.Client(t, "prometheus"), clientB.Client(t, "prometheus")

	if code, _, err := tlsGet(t, addr, "/metrics", "", serverCA.CertFile, nil); err != nil || code != http.StatusForbidden {
		t.Errorf("/metrics without a client certificate: %d (%v), want 403", code, err)
	}
	if code, _, err := tlsGet(t, addr, "/readyz", "", serverCA.CertFile, nil); err != nil || code != http.StatusOK {
		t.Errorf("/readyz without a client certificate: %d (%v), want 200", code, err)
	}
	if code, _, err := tlsGet(t, addr, "/metrics", "", serverCA.CertFile, &fromA); err != nil || code != http.StatusOK {
		t.Errorf("/metrics with a certificate of the trusted CA: %d (%v), want 200", code, err)
	}
	// (Go's client sends no certificate that the server's list of CAs
	// does not name; others fail the handshake.)
	if code, _, err := tlsGet(t, addr, "/metrics", "", serverCA.CertFile, &fromB); err == nil && code != http.StatusForbidden {
		t.Errorf("/metrics with a certificate of another CA: %d, want 403 or a failed handshake", code)
	}

	copyFile(t, clientB.CertFile, caFile) // the trusted CA changes
	if code, _, err := tlsGet(t, addr, "/metrics", "", serverCA.CertFile, &fromB); err != nil || code != http.StatusOK {
		t.Errorf("/metrics with a certificate of the new CA: %d (%v), want 200", code, err)
	}
	if code, _, err := tlsGet(t, addr, "/metrics", "", serverCA.CertFile, &fromA); err == nil && code != http.StatusForbidden {
		t.Errorf("/metrics with a certificate of the CA no longer trusted: %d, want 403 or a failed handshake", code)
	}
}

// A certificate without its key, or a client CA without a certificate, is
// refused at Start, naming the flags.
func TestAdminTLSMisconfigured(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  telemetry.AdminConfig
		want string
	}{
		{telemetry.AdminConfig{CertFile: filepath.Join(dir, "tls.crt")}, "admin-cert, admin-key: give both"},
		{telemetry.AdminConfig{KeyFile: filepath.Join(dir, "tls.key")}, "admin-cert, admin-key: give both"},
		{telemetry.AdminConfig{ClientCAFile: filepath.Join(dir, "ca.pem")}, "admin-client-cacert: needs --admin-cert"},
		{telemetry.AdminConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}, "admin-cert, admin-key: certificate " + dir},
	} {
		c.cfg.Addr = "127.0.0.1:0"
		if err := telemetry.NewAdmin(c.cfg).Start(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
