package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/telemetry"
)

func TestAdminServer(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Version: "v-test"})
	var etcdDown atomic.Bool
	a := telemetry.NewAdmin(telemetry.AdminConfig{
		Addr:     "127.0.0.1:0",
		Gatherer: m.Registry(),
		Ready: []telemetry.Check{
			{Name: "etcd", Check: func(context.Context) error {
				if etcdDown.Load() {
					return errors.New("etcd did not answer")
				}
				return nil
			}},
			{Name: "socket", Check: func(context.Context) error { return nil }},
		},
	})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "[+]etcd ok\n[+]socket ok\nready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	etcdDown.Store(true)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "[-]etcd failed: etcd did not answer\n[+]socket ok\n") {
		t.Errorf("/readyz with etcd down: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `baton_build_info{go_version="`) || !strings.Contains(body, `version="v-test"`) {
		t.Errorf("/metrics: %d\n%.500s", code, body)
	}

	// A second server on the same address fails to start, naming it.
	b := telemetry.NewAdmin(telemetry.AdminConfig{Addr: a.Addr().String()})
	if err := b.Start(); err == nil || !strings.Contains(err.Error(), "admin-addr "+a.Addr().String()) {
		t.Errorf("second Start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + a.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after Stop")
	}
}

// Hardening issue, the admin endpoint: with a token, /metrics needs it as
// a bearer token; the probes stay open.
func TestAdminToken(t *testing.T) {
	m := telemetry.NewMetrics(telemetry.MetricsConfig{Version: "v-test"})
	a := telemetry.NewAdmin(telemetry.AdminConfig{Addr: "127.0.0.1:0", Gatherer: m.Registry(), Token: "s3cret"})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", "http://"+a.Addr().String()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer wrong", http.StatusUnauthorized},
		{"/metrics", "Bearer s3cret", http.StatusOK},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
	} {
		if got := get(c.path, c.auth); got != c.want {
			t.Errorf("GET %s with %q: %d, want %d", c.path, c.auth, got, c.want)
		}
	}
}
