package sidecar_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/testcert"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/internal/tlsfile"
)

// The sidecar's admin server over TLS (--admin-cert, --admin-key), with
// the bearer token still required on /metrics.
func TestAdminOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir, "admin")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Server(t, "sidecar").Write(t, certFile, keyFile)
	sc, _ := start(t, sidecar.Config{AdminAddr: "127.0.0.1:0", AdminCert: certFile, AdminKey: keyFile, AdminToken: "s3cret"})
	pool, err := tlsfile.LoadCAPool(ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := pool.Pool()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", "https://"+sc.AdminAddr().String()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 10*time.Second, "/readyz over TLS", func() bool { return get("/readyz", "") == http.StatusOK })
	if code := get("/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", code)
	}
	if code := get("/metrics", "Bearer s3cret"); code != http.StatusOK {
		t.Errorf("/metrics with the token: %d, want 200", code)
	}
}
