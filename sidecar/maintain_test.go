package sidecar_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A claim whose sidecar died while no other sidecar was running is
// recovered by the sweep of the next sidecar that starts: requeue does not
// depend on any process having watched the lease expire.
func TestSweepAtStartRecoversOrphans(t *testing.T) {
	t.Parallel()
	first, ns := start(t, sidecar.Config{})
	submit(t, first, &batonv1.TaskSpec{Id: "orphan", Payload: payload(t, map[string]any{})})
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	victim, id, token := startRole(t, "BATON_TEST_ROLE=sidecar", "BATON_TEST_ENDPOINT="+endpoint, "BATON_TEST_NS="+ns,
		"BATON_TEST_SOCKET="+sidecartest.SocketPath(t), "BATON_TEST_TTL="+ttl.String())
	victim.Kill()
	cli := sidecartest.Client(t, endpoint, ns)
	waitFor(t, ttl+10*time.Second, "claim key removed by lease expiry", func() bool {
		resp, err := cli.Get(context.Background(), "q/claim/"+id, clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	})
	// No sidecar saw the claim vanish. A new one must find it at start
	// (its periodic sweep is an hour away).
	later := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}, Queue: workqueue.Config{SweepInterval: time.Hour}})
	task := next(t, later, 10*time.Second, "")
	if task == nil {
		t.Fatal("orphaned task not recovered by the sweep at start")
	}
	if task.Id != id || task.Attempt != 2 || task.FencingToken <= token {
		t.Fatalf("task = %s attempt %d token %d; want %s attempt 2 token > %d", task.Id, task.Attempt, task.FencingToken, id, token)
	}
}

// Finished tasks are removed after the retention period; unfinished ones
// stay.
func TestRetentionRemovesFinishedTasks(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{Queue: workqueue.Config{Retention: 500 * time.Millisecond, SweepInterval: 100 * time.Millisecond}})
	submit(t, sc,
		&batonv1.TaskSpec{Id: "done-1", Batch: "b", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "waiting", Batch: "b", Priority: -1, Payload: payload(t, map[string]any{})},
	)
	task := next(t, sc, 10*time.Second, "")
	if task.GetId() != "done-1" {
		t.Fatalf("got %q, want done-1", task.GetId())
	}
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		t.Fatal(err)
	}
	cli := sidecartest.Client(t, endpoint, ns)
	count := func(key string) int64 {
		resp, err := cli.Get(context.Background(), key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	waitFor(t, 10*time.Second, "finished task removed", func() bool {
		return count("task/done-1")+count("state/done-1")+count("result/done-1") == 0
	})
	// The waiting task was never claimed: it has no state key yet.
	if n := count("task/waiting"); n != 1 {
		t.Fatalf("pending task lost its spec to retention")
	}
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := store.BatchIDs(context.Background(), "b"); err != nil || !slices.Equal(ids, []string{"waiting"}) {
		t.Fatalf("the batch lists %v after retention (%v), want only the waiting task", ids, err)
	}
	if resp, err := cli.Get(context.Background(), "q/ready/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 1 {
		t.Fatalf("pending task lost its ready entry to retention: %v %v", resp, err)
	}
	resp, err := cli.Get(context.Background(), "gc/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("gc index left behind: %v %v", resp, err)
	}
}

// The pin of a batch is removed with the batch's last task, not before.
func TestRetentionRemovesPinWithItsBatch(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{Queue: workqueue.Config{Retention: 300 * time.Millisecond, SweepInterval: 100 * time.Millisecond}})
	cli := sidecartest.Client(t, endpoint, ns)
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pin := workqueue.Pin{Name: "global", Revision: 1, Document: []byte(`{"seed":1}`)}
	if _, err := store.Submit(ctx, []workqueue.Spec{
		{ID: "first", Queue: "tts", Batch: "pb", Payload: []byte(`{}`)},
		{ID: "second", Queue: "tts", Batch: "pb", Payload: []byte(`{}`), Priority: -1},
	}, workqueue.WithPin(pin)); err != nil {
		t.Fatal(err)
	}
	count := func(key string) int64 {
		resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	finish := func(want string) {
		t.Helper()
		task := next(t, sc, 10*time.Second, "")
		if task.GetId() != want || task.ConfigRevision != 1 {
			t.Fatalf("got %q rev %d, want %s with the pin", task.GetId(), task.GetConfigRevision(), want)
		}
		if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			t.Fatal(err)
		}
	}
	finish("first")
	waitFor(t, 10*time.Second, "first task removed", func() bool { return count("task/first") == 0 })
	if count("pin/pb") != 1 {
		t.Fatal("pin removed while its batch still has a task")
	}
	finish("second")
	waitFor(t, 10*time.Second, "pin removed with the last task", func() bool { return count("task/second")+count("pin/pb") == 0 })
}
