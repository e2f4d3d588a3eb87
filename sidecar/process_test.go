package sidecar_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar"
)

// jsonAttach opens an Attach stream in Connect JSON (an enveloped
// application/connect+json body, as curl or the Python client sends it)
// with the given request body over the socket, and returns the session id
// from the first message; the stream stays open until the returned close
// is called or the test ends. A refused request returns its error body.
func jsonAttach(t *testing.T, socket, body string) (session string, refused string, closeFn func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	env := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
	env = append(env, body...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://baton/baton.v1.TaskService/Attach", strings.NewReader(string(env)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("attach %s: HTTP %d", body, resp.StatusCode)
	}
	// Each frame: flags (bit 1: end of stream, carrying an error or
	// nothing), a 4-byte length, the JSON message.
	r := bufio.NewReader(resp.Body)
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		t.Fatalf("attach %s: %v", body, err)
	}
	msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		t.Fatalf("attach %s: %v", body, err)
	}
	if head[0]&2 != 0 {
		return "", string(msg), cancel
	}
	var first struct{ Session string }
	if err := json.Unmarshal(msg, &first); err != nil || first.Session == "" {
		t.Fatalf("attach %s: first message %s (%v)", body, msg, err)
	}
	return first.Session, "", cancel
}

// jsonPost sends one unary Connect JSON request over the socket and
// returns the HTTP status and body.
func jsonPost(t *testing.T, socket, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://baton"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The name a process attaches with (AttachRequest.process, sent here in
// Connect JSON) is the `process` of its session in `baton workers list`
// and of its lock in `baton locks list`, beside the sidecar's worker id.
// The key "worker" that clients sent before the field was renamed still
// names the process; a misspelt key is refused, naming it.
func TestProcessNameIsShownAsProcess(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{WorkerID: "gpu-9"})
	sess, refused, _ := jsonAttach(t, sc.Socket, `{"process":"synth-json"}`)
	if refused != "" {
		t.Fatalf("attach with process: %s", refused)
	}
	old, refused, closeOld := jsonAttach(t, sc.Socket, `{"worker":"synth-old"}`)
	if refused != "" {
		t.Fatalf("attach with the former key worker: %s", refused)
	}
	if _, refused, _ := jsonAttach(t, sc.Socket, `{"proces":"typo"}`); !strings.Contains(refused, "invalid_argument") || !strings.Contains(refused, "proces") {
		t.Fatalf("attach with a misspelt key: %q, want invalid_argument naming it", refused)
	}

	// workers list: the raw JSON, so that the key is checked, not a struct
	// field that would decode whatever it is called.
	type jsonSession struct {
		Session string `json:"session"`
		Process string `json:"process"`
		PID     int    `json:"pid"`
	}
	// sessionsOf reads workers list; ok is false until the worker's entry is
	// there (the registry writes it once the sidecar has its lease).
	sessionsOf := func() (_ map[string]jsonSession, _ string, ok bool) {
		out, stderr, code := opsCLI(t, ns, "workers", "list", "-o", "json")
		if code != 0 {
			t.Fatalf("workers list: exit %d: %s", code, stderr)
		}
		var ws []map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &ws); err != nil || len(ws) > 1 {
			t.Fatalf("workers list -o json: %v\n%s", err, out)
		}
		if len(ws) == 0 {
			return nil, "", false
		}
		var id string
		var ss []map[string]json.RawMessage
		_ = json.Unmarshal(ws[0]["worker_id"], &id)
		_ = json.Unmarshal(ws[0]["sessions"], &ss)
		got := map[string]jsonSession{}
		for _, s := range ss {
			var js jsonSession
			_ = json.Unmarshal(s["session"], &js.Session)
			_ = json.Unmarshal(s["process"], &js.Process)
			_ = json.Unmarshal(s["pid"], &js.PID)
			got[js.Process] = js
		}
		return got, id, true
	}
	waitFor(t, 10*time.Second, "both sessions in workers list", func() bool {
		got, _, _ := sessionsOf()
		return len(got) == 2
	})
	got, id, _ := sessionsOf()
	if id != "gpu-9" || got["synth-json"].Session != sess || got["synth-old"].Session != old || got["synth-json"].PID == 0 {
		t.Fatalf("workers list: worker %q, sessions %+v; want worker gpu-9 with synth-json (%s) and synth-old (%s)", id, got, sess, old)
	}
	out, _, code := opsCLI(t, ns, "workers", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[0], "PROCESSES") || !strings.Contains(lines[1], "synth-json,synth-old") {
		t.Fatalf("workers list table:\n%s", out)
	}

	// locks list: a lock taken in Connect JSON under the session.
	if code, body := jsonPost(t, sc.Socket, "/baton.v1.LockService/Lock", fmt.Sprintf(`{"name":"batch","session":%q,"wait":"5s"}`, sess)); code != http.StatusOK {
		t.Fatalf("lock: HTTP %d %s", code, body)
	}
	out, stderr, code := opsCLI(t, ns, "locks", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("locks list: exit %d: %s", code, stderr)
	}
	var locks []struct {
		Name   string `json:"name"`
		Holder struct {
			Owner map[string]any `json:"owner"`
		} `json:"holder"`
	}
	if err := json.Unmarshal([]byte(out), &locks); err != nil || len(locks) != 1 {
		t.Fatalf("locks list -o json: %v\n%s", err, out)
	}
	if o := locks[0].Holder.Owner; o["process"] != "synth-json" || o["worker_id"] != "gpu-9" || o["session"] != sess || o["worker"] != nil {
		t.Fatalf("lock owner %v; want process synth-json, worker_id gpu-9, session %s and no key worker", o, sess)
	}

	// A session that closes leaves the list.
	closeOld()
	waitFor(t, 10*time.Second, "the closed session leaves workers list", func() bool {
		got, _, _ := sessionsOf()
		_, still := got["synth-old"]
		return len(got) == 1 && !still
	})
}
