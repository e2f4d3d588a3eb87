package sidecar_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar"
)

// TestResponsesNotCompressed: the sidecar answers uncompressed even when
// the client offers gzip (connect-go clients do by default). On a local
// socket compression only costs CPU and about 1 MB per response in
// flight; baton bench found it was 15% of the sidecar's CPU.
func TestResponsesNotCompressed(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sc.Socket)
		},
		DisableCompression: true, // leave Accept-Encoding to the request
	}}
	defer hc.CloseIdleConnections()
	// A response large enough that a compressing server would compress it.
	big := strings.Repeat("x", 8<<10)
	req, err := http.NewRequest(http.MethodPost, "http://baton/baton.v1.TaskService/Submit",
		strings.NewReader(`{"tasks":[{"id":"big","payload":{"text":"`+big+`"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("submit: HTTP %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://baton/baton.v1.TaskService/Next", strings.NewReader(`{"wait":"5s"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next: HTTP %d", resp.StatusCode)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Fatalf("response Content-Encoding %q; want none", enc)
	}
}
