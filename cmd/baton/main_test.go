package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// buildBaton builds the binary once per test run.
func buildBaton(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "baton")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer collects a process's output for reading while it runs.
type lineWaiter struct {
	lines chan string
}

func watchLines(r io.Reader) *lineWaiter {
	w := &lineWaiter{lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	return w
}

func (w *lineWaiter) waitFor(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("output ended before %q", prefix)
			}
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("no %q within %v", prefix, within)
		}
	}
}

func unixHTTP(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

func call(t *testing.T, hc *http.Client, method string, body string) map[string]any {
	t.Helper()
	resp, err := hc.Post("http://baton/baton.v1.TaskService/"+method, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s: decoding: %v", method, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d: %v", method, resp.StatusCode, m)
	}
	return m
}

// TestDevAndSubmit runs `baton dev` and `baton submit` as a user would,
// then takes a task over the socket with plain HTTP + JSON.
func TestDevAndSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBaton(t)
	dir, err := os.MkdirTemp("", "btdev")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	etcdAddr := freePort(t)
	dev := exec.Command(bin, "dev", "--data-dir", dir, "--etcd-listen", etcdAddr, "--queue", "tts", "--admin-addr", "127.0.0.1:0")
	stdout, _ := dev.StdoutPipe()
	var stderr bytes.Buffer
	dev.Stderr = &stderr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	defer dev.Process.Kill()
	out := watchLines(stdout)
	out.waitFor(t, "baton dev ready", 30*time.Second)
	socket := filepath.Join(dir, "baton.sock")
	// The ready message names the admin server (port 0: a free one).
	adminLine := out.waitFor(t, "admin:", 5*time.Second)
	admin, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(adminLine), "admin:")), " ")
	if !strings.HasPrefix(admin, "http://127.0.0.1:") {
		t.Fatalf("admin line %q", adminLine)
	}
	// ...and the web page, on by default in baton dev.
	webLine := out.waitFor(t, "web:", 5*time.Second)
	if web := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(webLine), "web:")); web != admin+"/ui/" {
		t.Fatalf("web line %q, want %s/ui/", webLine, admin)
	}
	if resp, err := http.Get(admin + "/ui/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/ui/: %v %v", admin, resp, err)
	} else {
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), `<script src="app.js"`) {
			t.Fatalf("the web page: %.200s", page)
		}
	}

	// Regression (hardening issue, item 5): baton dev's etcd was open to
	// every local user. Its authentication is on: a client without the
	// root password (kept 0600 in the data dir) is refused.
	if fi, err := os.Stat(filepath.Join(dir, "etcd-root.password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("etcd root password file: %v %v, want mode 0600", fi, err)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = anon.Get(gctx, "baton/", clientv3.WithPrefix())
	gcancel()
	anon.Close()
	if err == nil {
		t.Fatal("an etcd client without credentials read baton dev's keys")
	}

	// A second dev on the same data dir is refused at once.
	second := exec.Command(bin, "dev", "--data-dir", dir, "--etcd-listen", freePort(t))
	msg, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "in use") {
		t.Fatalf("second dev: err %v, output %q; want a refusal", err, msg)
	}

	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(bin, append([]string{"--endpoints", etcdAddr, "--etcd-password-file", filepath.Join(dir, "etcd-root.password")}, args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"uttid\":\"b1\",\"syn_text\":\"ok\"}\nnot json\n{\"uttid\":\"has space\"}\n"), 0o600)
	_, e, err := run("submit", "--queue", "tts", bad)
	if err == nil {
		t.Fatal("submit of a file with bad lines succeeded")
	}
	for _, want := range []string{bad + ":2: not a JSON object", bad + ":3: id:", "nothing was written"} {
		if !strings.Contains(e, want) {
			t.Errorf("submit stderr %q lacks %q", e, want)
		}
	}

	good := filepath.Join(dir, "batch.jsonl")
	var lines []string
	for i := 1; i <= 5; i++ {
		lines = append(lines, fmt.Sprintf(`{"uttid":"utt_%d","prompt_text":"p","prompt_speech":"p.wav","syn_text":"line %d"}`, i, i))
	}
	os.WriteFile(good, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	o, e, err := run("submit", "--queue", "tts", good)
	if err != nil || !strings.Contains(o, "5 created, 0 existing") {
		t.Fatalf("submit: %v\nstdout %s\nstderr %s", err, o, e)
	}
	o, _, err = run("submit", "--queue", "tts", good)
	if err != nil || !strings.Contains(o, "0 created, 5 existing") {
		t.Fatalf("resubmit: %v %s", err, o)
	}

	// The first bad-file line was never written: exactly five tasks, in order.
	hc := unixHTTP(socket)
	for i := 1; i <= 5; i++ {
		m := call(t, hc, "Next", `{"wait":"2s"}`)
		task, _ := m["task"].(map[string]any)
		if task == nil || task["id"] != fmt.Sprintf("utt_%d", i) {
			t.Fatalf("next %d: %v", i, m)
		}
		call(t, hc, "Complete", fmt.Sprintf(`{"claim":%q,"result":{"path":"/out/%d.wav"}}`, task["claim"], i))
	}
	if m := call(t, hc, "Next", `{}`); m["task"] != nil {
		t.Fatalf("queue not empty: %v", m)
	}

	// The admin server: alive, ready, and counting what just happened.
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "[+]lease ok",
		"/metrics": `baton_queue_tasks_completed_total{queue="tts"} 5`,
	} {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.2000s", path, resp.StatusCode, want, body)
		}
	}

	// What grpcurl -plaintext -unix SOCKET grpc.health.v1.Health/Check does:
	// resolve the method by reflection, then call it over gRPC.
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}}); err != nil {
		t.Fatal(err)
	}
	if r, err := rs.Recv(); err != nil || len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection of grpc.health.v1.Health: %v %v", r.GetErrorResponse(), err)
	}
	rs.CloseSend()
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc.health.v1.Health/Check: %v %v", hr, err)
	}

	// SIGTERM stops everything cleanly and removes the socket.
	dev.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- dev.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not stop on SIGTERM")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
