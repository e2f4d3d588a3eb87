package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// freePort returns a 127.0.0.1 port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startExternalEtcd runs the etcd binary on PATH (Debian's etcd-server is
// 3.4) as a separate process and returns its client endpoint. The test is
// skipped when there is no binary, unless BATON_REQUIRE_ETCD=1 (CI sets it).
func startExternalEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("BATON_REQUIRE_ETCD") == "1" {
			t.Fatal("BATON_REQUIRE_ETCD=1 but no etcd binary on PATH (apt-get install etcd-server)")
		}
		t.Skip("no etcd binary on PATH; install Debian's etcd-server to run this test")
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	cmd := exec.Command(bin, "--name", "compat", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "compat="+peer, "--logger", "zap", "--log-outputs", filepath.Join(dir, "etcd.log"))
	stderr, err := os.Create(filepath.Join(dir, "etcd.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, client)
		cancel()
		if err == nil {
			t.Logf("external etcd %s at %s", st.Version, client)
			return client
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			out, _ := os.ReadFile(filepath.Join(dir, "etcd.stderr"))
			t.Fatalf("etcd at %s not ready after 20s: %v\n%s%s", client, err, out, log)
		}
		time.Sleep(50 * time.Millisecond) // polling for readiness with a deadline
	}
}

// TestExternalEtcd34 proves the sidecar works against a real external etcd
// of the oldest supported line (3.4), not only the embedded 3.6 server:
// watch-driven dispatch, session-bound claims, fencing.
func TestExternalEtcd34(t *testing.T) {
	t.Parallel()
	ep := startExternalEtcd(t)
	sc := sidecartest.StartSidecar(t, ep, sidecartest.Namespace(t), sidecar.Config{Queues: []string{"tts"}})

	// A worker session with a long poll waiting before anything exists:
	// the submit must wake it through the watch.
	ctx, closeSession := context.WithCancel(context.Background())
	defer closeSession()
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "compat"}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("attach: %v", stream.Err())
	}
	session := stream.Msg().GetSession()
	got := make(chan *batonv1.Task, 1)
	go func() { got <- next(t, sc, 10*time.Second, session) }()
	submit(t, sc, &batonv1.TaskSpec{Id: "old-etcd", Payload: payload(t, map[string]any{"syn_text": "hi"})})
	first := <-got
	if first == nil || first.Id != "old-etcd" || first.Attempt != 1 {
		t.Fatalf("first claim = %+v, want old-etcd attempt 1", first)
	}

	// Closing the session gives the claim back at once, as a new attempt
	// with a higher fencing token.
	closeSession()
	stream.Close()
	second := next(t, sc, 10*time.Second, "")
	if second == nil || second.Id != "old-etcd" || second.Attempt != 2 || second.FencingToken <= first.FencingToken {
		t.Fatalf("second claim = %+v, want old-etcd attempt 2 with token > %d", second, first.FencingToken)
	}
	_, err = sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: first.Claim}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("complete with the stale claim: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: second.Claim})); err != nil {
		t.Fatalf("complete with the live claim: %v", err)
	}
}
