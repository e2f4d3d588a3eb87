package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
)

// rollingSidecar is one `baton sidecar` process of the rolling-restart
// test, restarted with the same socket, admin address and name.
type rollingSidecar struct {
	name, socket, admin string
	proc                *childproc.Process
}

// TestRollingRestartLosesNoTask is the upgrade procedure of
// docs/operations.md ("Upgrading sidecars") with real processes: three
// `baton sidecar` processes, a worker on each socket taking and completing
// tasks, batches submitted while every sidecar in turn gets SIGTERM, exits
// and is started again. Every task must end DONE, and no task may have two
// accepted Completes.
func TestRollingRestartLosesNoTask(t *testing.T) {
	// Registered first, so it runs after every other cleanup (etcd's).
	t.Cleanup(func() { goleak.VerifyNone(t, sidecartest.LeakOptions()...) })
	bin := buildBaton(t)
	endpoint := sidecartest.Etcd(t)
	ns := sidecartest.Namespace(t)
	logs := t.TempDir()
	global := []string{"--endpoints", endpoint, "--namespace", ns}

	start := func(s *rollingSidecar) {
		t.Helper()
		logf, err := os.OpenFile(filepath.Join(logs, s.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		s.proc, err = childproc.Start(childproc.Config{
			Name: s.name,
			Exe:  childproc.Exe{Path: bin},
			Args: append(global, "sidecar", "--socket", s.socket, "--queue", "tts",
				"--worker-id", s.name, "--ttl", "5s", "--grace", "10s", "--admin-addr", s.admin),
			StdoutTo:  logf,
			StderrTo:  logf,
			AfterExit: func() { logf.Close() },
		})
		if err != nil {
			logf.Close()
			t.Fatal(err)
		}
		// Ready: etcd reachable, lease held, socket serving.
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + s.admin + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
			select {
			case <-s.proc.Done():
				t.Fatalf("%s exited before it was ready: %v", s.name, s.proc.Wait())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready within 30s", s.name)
			}
		}
	}
	// stop sends SIGTERM and waits for the sidecar to exit by itself, with
	// status 0.
	stop := func(s *rollingSidecar) {
		t.Helper()
		if err := s.proc.Stop(30 * time.Second); err != nil {
			t.Fatalf("after SIGTERM: %v", err)
		}
	}

	sidecars := make([]*rollingSidecar, 3)
	for i := range sidecars {
		sidecars[i] = &rollingSidecar{name: fmt.Sprintf("side-%d", i), socket: sidecartest.SocketPath(t), admin: freePort(t)}
		start(sidecars[i])
	}
	t.Cleanup(func() {
		for _, s := range sidecars {
			s.proc.Kill()
		}
	})

	// One worker per sidecar, as in a pod. Each completes what it takes
	// after a short piece of work, and reconnects when its sidecar is gone.
	var (
		mu        sync.Mutex
		completed = map[string]int{} // accepted Completes per task
		refused   int                // Completes answered with an error
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i, s := range sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rollingWorker(ctx, s.socket, fmt.Sprintf("worker-%d", i), func(id string, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					refused++
					return
				}
				completed[id]++
			})
		}()
	}
	done := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(completed)
	}
	waitDone := func(n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for done() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d tasks completed, want %d within %s", done(), n, within)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}

	// Tasks flow: a batch is submitted before each restart, and the
	// sidecar is stopped once its batch is under way, so that workers hold
	// tasks when SIGTERM arrives.
	const batch = 40
	var ids []string
	submit := func(k int) {
		t.Helper()
		var lines []string
		for j := range batch {
			id := fmt.Sprintf("b%d-t%02d", k, j)
			ids = append(ids, id)
			lines = append(lines, fmt.Sprintf(`{"id":%q,"n":%d}`, id, j))
		}
		file := filepath.Join(logs, fmt.Sprintf("batch%d.jsonl", k))
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, append(global, "submit", "--queue", "tts", file)...).CombinedOutput(); err != nil {
			t.Fatalf("baton submit: %v\n%s", err, out)
		}
	}
	for k, s := range sidecars {
		before := len(ids) - batch
		submit(k)
		waitDone(before+batch/4, 30*time.Second)
		stop(s)
		start(s)
	}
	submit(len(sidecars))
	waitDone(len(ids), 45*time.Second)

	// Every task DONE in etcd, each with exactly one accepted Complete.
	out, err := exec.Command(bin, append(global, "tasks", "list", "--queue", "tts", "--limit", "10000", "-o", "json")...).Output()
	if err != nil {
		t.Fatalf("baton tasks list: %v", err)
	}
	var tasks []struct {
		ID     string `json:"id"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &tasks); err != nil {
		t.Fatalf("baton tasks list -o json: %v\n%s", err, out)
	}
	state := map[string]string{}
	for _, tk := range tasks {
		state[tk.ID] = tk.Status.State
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if state[id] != "DONE" {
			t.Errorf("task %s is %q, want DONE", id, state[id])
		}
		if completed[id] != 1 {
			t.Errorf("task %s has %d accepted Completes, want 1", id, completed[id])
		}
	}
	t.Logf("%d tasks through %d rolling restarts; %d answers refused", len(ids), len(sidecars), refused)
}

// rollingWorker is a worker process's loop: attach a session, take tasks,
// complete each after a short piece of work; on any error from the socket
// (its sidecar stopping), start again with a new session until ctx ends.
// answered gets each Complete's outcome.
func rollingWorker(ctx context.Context, socket, name string, answered func(id string, err error)) {
	for ctx.Err() == nil {
		rollingSession(ctx, socket, name, answered)
		select { // reconnect backoff, as a worker does
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func rollingSession(ctx context.Context, socket, name string, answered func(id string, err error)) {
	c := client.New(socket)
	defer c.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Tasks.Attach(sctx, connect.NewRequest(&batonv1.AttachRequest{Process: name}))
	if err != nil {
		return
	}
	if !stream.Receive() {
		stream.Close()
		return
	}
	session := stream.Msg().Session
	// The stream's later messages (cancel requests) are not used here. It
	// ends with the sidecar (then this session's calls stop) or when this
	// function returns and cancels sctx; the function waits for it.
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for stream.Receive() {
		}
		stream.Close()
		cancel()
	}()
	defer func() {
		cancel()
		<-streamDone
	}()
	for sctx.Err() == nil {
		resp, err := c.Tasks.Next(sctx, connect.NewRequest(&batonv1.NextRequest{Session: session, Wait: durationpb.New(2 * time.Second)}))
		if err != nil {
			return
		}
		task := resp.Msg.Task
		if task == nil {
			continue
		}
		time.Sleep(30 * time.Millisecond) // the work
		// The answer goes out even when the session's stream has ended:
		// a stopping sidecar waits --grace for it.
		actx, acancel := context.WithTimeout(context.WithoutCancel(sctx), 15*time.Second)
		_, err = c.Tasks.Complete(actx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim}))
		acancel()
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			return
		}
		answered(task.Id, err)
	}
}
