package sidecar_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// runWorkerRole is a worker process: it attaches to the sidecar at
// BATON_TEST_SOCKET, claims one task under its session, prints
// "CLAIMED <id> <token>" and then waits to be killed.
func runWorkerRole() {
	c := client.New(os.Getenv("BATON_TEST_SOCKET"))
	ctx := context.Background()
	stream, err := c.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "test-worker"}))
	if err != nil || !stream.Receive() {
		fmt.Println("ERROR attach", err, stream.Err())
		os.Exit(1)
	}
	session := stream.Msg().Session
	resp, err := c.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Session: session, Wait: durationpb.New(30 * time.Second)}))
	if err != nil || resp.Msg.Task == nil {
		fmt.Println("ERROR next", err)
		os.Exit(1)
	}
	fmt.Printf("CLAIMED %s %d\n", resp.Msg.Task.Id, resp.Msg.Task.FencingToken)
	for stream.Receive() {
	}
	select {}
}

// runSidecarRole is a sidecar process with its own claimer: it claims one
// task without a session, prints "CLAIMED <id> <token>" and waits to be
// killed, so that only its lease expiring can return the task.
func runSidecarRole() {
	startRoleSidecar()
	c := client.New(os.Getenv("BATON_TEST_SOCKET"))
	resp, err := c.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(30 * time.Second)}))
	if err != nil || resp.Msg.Task == nil {
		fmt.Println("ERROR next", err)
		os.Exit(1)
	}
	fmt.Printf("CLAIMED %s %d\n", resp.Msg.Task.Id, resp.Msg.Task.FencingToken)
	select {}
}

// startRoleSidecar starts the sidecar of a role process, on
// BATON_TEST_ENDPOINT in namespace BATON_TEST_NS with lease TTL
// BATON_TEST_TTL, serving BATON_TEST_SOCKET, and waits until it serves.
func startRoleSidecar() {
	ttl, _ := time.ParseDuration(os.Getenv("BATON_TEST_TTL"))
	sc, err := sidecar.New(sidecar.Config{
		Etcd:   etcdconn.Config{Endpoints: []string{os.Getenv("BATON_TEST_ENDPOINT")}, Namespace: os.Getenv("BATON_TEST_NS")},
		Socket: os.Getenv("BATON_TEST_SOCKET"),
		Queues: []string{"tts"},
		TTL:    ttl,
	})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	go func() { _ = sc.Run(context.Background()) }()
	<-sc.Ready()
}

// startProc re-runs the test binary in a role (internal/childproc) and
// returns its first stdout line; the process is killed when the test ends.
func startProc(t *testing.T, env ...string) (*childproc.Process, string) {
	t.Helper()
	var first string
	p, err := childproc.Start(childproc.Config{
		Name:     "role process",
		Exe:      childproc.Exe{Path: os.Args[0], Args: []string{"-test.run=^$"}},
		Env:      env,
		StderrTo: os.Stderr,
		Ready:    func(line string) bool { first = strings.TrimSpace(line); return true }, // read once WaitReady returns
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	// A role claims with a 30s wait: it says something well within this.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return p, first
}

// startRole starts a role process and waits for its CLAIMED line.
func startRole(t *testing.T, env ...string) (p *childproc.Process, id string, token int64) {
	t.Helper()
	p, line := startProc(t, env...)
	if _, err := fmt.Sscanf(line, "CLAIMED %s %d", &id, &token); err != nil {
		t.Fatalf("role process said %q", line)
	}
	return p, id, token
}

func TestKilledWorkerTaskReturnsAtOnce(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "synth-1", Payload: payload(t, map[string]any{"syn_text": "hi"})})
	worker, id, token := startRole(t, "BATON_TEST_ROLE=worker", "BATON_TEST_SOCKET="+sc.Socket)
	if id != "synth-1" {
		t.Fatalf("worker claimed %s", id)
	}
	worker.Kill()
	killed := time.Now()
	// The sidecar sees the Attach stream close and returns the task at
	// once: it is handed out again long before its 5m timeout (the wait
	// allows for the machine's load when tests run in parallel).
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("task not handed out again within 10s of the worker's SIGKILL")
	}
	t.Logf("task back %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	if task.Id != id || task.Attempt != 2 || task.FencingToken <= token {
		t.Fatalf("task = %s attempt %d token %d; want %s attempt 2 token > %d", task.Id, task.Attempt, task.FencingToken, id, token)
	}
}

func TestSidecarLeaseExpiryReturnsTask(t *testing.T) {
	t.Parallel()
	survivor, ns := start(t, sidecar.Config{})
	submit(t, survivor, &batonv1.TaskSpec{Id: "synth-2", Payload: payload(t, map[string]any{})})
	const ttl = 2 * time.Second
	victim, id, token := startRole(t, "BATON_TEST_ROLE=sidecar", "BATON_TEST_ENDPOINT="+endpoint, "BATON_TEST_NS="+ns,
		"BATON_TEST_SOCKET="+sidecartest.SocketPath(t), "BATON_TEST_TTL="+ttl.String())
	if id != "synth-2" {
		t.Fatalf("victim claimed %s", id)
	}
	victim.Kill()
	killed := time.Now()
	// Nothing revoked the victim's lease: the task comes back when it
	// expires, about one TTL later.
	task := next(t, survivor, ttl+10*time.Second, "")
	if task == nil {
		t.Fatal("task not handed out again after the dead sidecar's lease expired")
	}
	t.Logf("task back %v after SIGKILL of its sidecar (ttl %v)", time.Since(killed).Round(time.Millisecond), ttl)
	if task.Id != id || task.Attempt != 2 || task.FencingToken <= token {
		t.Fatalf("task = %s attempt %d token %d; want %s attempt 2 token > %d", task.Id, task.Attempt, task.FencingToken, id, token)
	}
}

func TestHeartbeatTimeoutReturnsTask(t *testing.T) {
	// Not parallel: 200ms heartbeats must beat a 1s task timeout in real
	// time, which a loaded machine may not allow beside other tests.
	sc, _ := start(t, sidecar.Config{})
	submit(t, sc, &batonv1.TaskSpec{Id: "hung", Timeout: durationpb.New(time.Second), Payload: payload(t, map[string]any{})})
	first := next(t, sc, 10*time.Second, "")
	// Heartbeats keep the claim: while they come, nobody else gets it.
	done := make(chan struct{})
	hb := make(chan error, 1)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				hb <- nil
				return
			case <-tick.C:
				if _, err := sc.Client.Tasks.Heartbeat(context.Background(), connect.NewRequest(&batonv1.HeartbeatRequest{Claim: first.Claim, Progress: 0.5})); err != nil {
					hb <- err
					return
				}
			}
		}
	}()
	if task := next(t, sc, 2*time.Second, ""); task != nil {
		t.Fatalf("task %s handed out while its claim was heartbeating", task.Id)
	}
	close(done)
	if err := <-hb; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	// Without heartbeats the claim lapses after the task's timeout.
	task := next(t, sc, 10*time.Second, "")
	if task == nil || task.Id != "hung" || task.Attempt != 2 {
		t.Fatalf("after the timeout got %+v, want hung attempt 2", task)
	}
	_, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: first.Claim}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("complete of the lapsed claim: %v, want FAILED_PRECONDITION", err)
	}
}

// Graceful shutdown gives unfinished claims back at once, without using
// their attempt, instead of leaving them until the lease expires.
func TestShutdownReleasesClaims(t *testing.T) {
	t.Parallel()
	ns := sidecartest.Namespace(t)
	stopping := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}, Grace: 100 * time.Millisecond, TTL: time.Minute})
	other := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}})
	submit(t, stopping, &batonv1.TaskSpec{Id: "inflight", Payload: payload(t, map[string]any{})})
	if task := next(t, stopping, 10*time.Second, ""); task == nil {
		t.Fatal("no task")
	}
	if err := stopping.Stop(); err != nil {
		t.Fatal(err)
	}
	// Far less than the one-minute TTL.
	task := next(t, other, 10*time.Second, "")
	if task == nil || task.Id != "inflight" || task.Attempt != 1 {
		t.Fatalf("after shutdown got %+v, want inflight at attempt 1", task)
	}
}

func TestNotBeforeHoldsTaskBack(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	at := time.Now().Add(700 * time.Millisecond)
	submit(t, sc, &batonv1.TaskSpec{Id: "later", NotBefore: timestamppb.New(at), Payload: payload(t, map[string]any{})})
	task := next(t, sc, 10*time.Second, "")
	if task == nil || task.Id != "later" {
		t.Fatalf("got %+v", task)
	}
	if now := time.Now(); now.Before(at) {
		t.Fatalf("task handed out %v before its not_before", at.Sub(now))
	}
}

func TestUnavailableWhenEtcdIsAway(t *testing.T) {
	t.Parallel()
	// A sidecar pointed at a port where nothing listens still serves its
	// socket, and says UNAVAILABLE.
	sc := sidecartest.StartSidecar(t, "127.0.0.1:1", sidecartest.Namespace(t), sidecar.Config{Queues: []string{"tts"}})
	_, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(500 * time.Millisecond)}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("next: %v, want UNAVAILABLE", err)
	}
}
