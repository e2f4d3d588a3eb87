package sidecar_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar"
)

// Regression (hardening issue, item 9): an unknown field in a Connect
// JSON request was ignored, so {"wiat": "5s"} was a Next without a wait
// (and with another typo, from another queue). It is refused, naming the
// field.
func TestUnknownJSONFieldIsRefused(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sc.Socket)
	}}}
	post := func(body string) (int, string) {
		resp, err := hc.Post("http://baton/baton.v1.TaskService/Next", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"wiat":"1s"}`); code != http.StatusBadRequest || !strings.Contains(body, "invalid_argument") || !strings.Contains(body, `wiat`) {
		t.Fatalf("typo'd field: %d %s", code, body)
	}
	if code, body := post(`{"wait":"0s"}`); code != http.StatusOK {
		t.Fatalf("good request: %d %s", code, body)
	}
}
