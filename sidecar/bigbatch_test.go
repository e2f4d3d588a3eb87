package sidecar_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Regression (big batches issue, item 4): a result is a reference to the
// output, not the output. A result over the limit is refused with
// INVALID_ARGUMENT saying where output belongs; the claim stays live, and
// the same task completes with a small result.
func TestBigResultRefused(t *testing.T) {
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()
	submit(t, sc, &batonv1.TaskSpec{Id: "big-result", Payload: payload(t, map[string]any{"syn_text": "hello"})})
	task := next(t, sc, 10*time.Second, "")
	if task == nil {
		t.Fatal("no task")
	}
	big := payload(t, map[string]any{"audio_base64": strings.Repeat("A", 5000)})
	_, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: big}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "result:") ||
		!strings.Contains(err.Error(), "4096") || !strings.Contains(err.Error(), "path or URI") {
		t.Fatalf("complete with a 5 KB result: %v, want INVALID_ARGUMENT naming result, the limit and where output belongs", err)
	}
	small := payload(t, map[string]any{"path": "s3://corpus/out/big-result.wav"})
	if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: small})); err != nil {
		t.Fatalf("complete with a small result after the refusal: %v", err)
	}
}

// Big batches issue, item 3: a real etcd with a small quota is filled with
// submits. Submit is refused with RESOURCE_EXHAUSTED naming the database
// size, the quota and the pending tasks before etcd raises NOSPACE;
// heartbeats, locks, claims and completes go on; the workers then finish
// every pending task, nothing is lost and etcd never raised the alarm.
// After the documented compaction and defragmentation, submits are
// admitted again.
//
// Tasks carry 24 KB payloads so that a hundred fill the quota in a dozen
// submits. The size is read from etcd on every submit (Refresh 1ns), so
// the refusal comes at 80% of the real database, not of an estimate. The
// sidecar is told a quota of 4 MiB (--etcd-quota-bytes) on an etcd of
// 8 MiB: on so small a quota, 20% is not room enough for the history the
// drain writes between compactions (told the real 4 MiB, the drain of 104
// tasks met NOSPACE at the 87th complete: with 24 KB values, compaction
// rewrites the bbolt leaves that hold the specs, and the database grew by
// about 19 KB per drained task). docs/operations.md says how to size that
// headroom.
func TestSubmitRefusedNearQuota(t *testing.T) {
	const quota, told = 8 << 20, 4 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{QuotaBackendBytes: quota, AutoCompactionRetention: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ns := sidecartest.Namespace(t)
	cli := sidecartest.Client(t, srv.Endpoint(), ns)
	adm, err := workqueue.NewAdmission(workqueue.AdmissionConfig{Maintenance: cli.Maintenance, Endpoints: []string{srv.Endpoint()}, QuotaBytes: told, Refresh: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	sc := sidecartest.StartSidecar(t, srv.Endpoint(), ns, sidecar.Config{Queues: []string{"tts"}, Queue: workqueue.Config{Admission: adm}})
	noAlarm := func(when string) {
		t.Helper()
		resp, err := cli.AlarmList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Alarms) > 0 {
			t.Fatalf("%s: etcd raised %v", when, resp.Alarms)
		}
	}
	bigSpec := func(i int) *batonv1.TaskSpec {
		return &batonv1.TaskSpec{Id: fmt.Sprintf("utt_%07d", i), Batch: "corpus", Payload: payload(t, map[string]any{
			"uttid": fmt.Sprintf("utt_%07d", i), "syn_text": strings.Repeat("x", 24_000)})}
	}

	created := map[string]bool{}
	var refusal error
	for i := 0; refusal == nil; i += 8 {
		if i > 400 {
			t.Fatal("400 tasks of 24 KB submitted under a 4 MiB quota without a refusal")
		}
		specs := make([]*batonv1.TaskSpec, 8)
		for j := range specs {
			specs[j] = bigSpec(i + j)
		}
		resp, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: specs}))
		if err != nil {
			refusal = err
			break
		}
		for _, id := range resp.Msg.GetIds() {
			created[id] = true
		}
	}
	msg := refusal.Error()
	if connect.CodeOf(refusal) != connect.CodeResourceExhausted || !strings.Contains(msg, "4.2 MB quota") ||
		!strings.Contains(msg, fmt.Sprintf("%d tasks pending", len(created))) || !strings.Contains(msg, "database is") {
		t.Fatalf("refusal after %d tasks: %v; want RESOURCE_EXHAUSTED naming the database size, the quota and %d tasks pending", len(created), refusal, len(created))
	}
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	// Refused because etcd was near its quota, not because of a guess: the
	// database is past 80% less one submit (8 tasks, ~0.4 MB estimated).
	if st.DbSize < told*8/10-500_000 {
		t.Fatalf("refused with etcd's database at %d bytes of %d", st.DbSize, told)
	}
	t.Logf("%d tasks admitted; database %d of %d bytes; then: %v", len(created), st.DbSize, told, refusal)
	noAlarm("after the refusal")

	// Near the quota, the writes that workers make go on: a claim, its
	// heartbeat, a lock and its release, the completion.
	session, endSession := lockSession(t, sc, "near-quota")
	task := next(t, sc, 10*time.Second, session)
	if task == nil {
		t.Fatal("no task to claim near the quota")
	}
	if _, err := sc.Client.Tasks.Heartbeat(ctx, connect.NewRequest(&batonv1.HeartbeatRequest{Claim: task.Claim, Progress: 0.5})); err != nil {
		t.Fatalf("heartbeat near the quota: %v", err)
	}
	if _, err := lock(sc.Client, "model-load", session, 10*time.Second); err != nil {
		t.Fatalf("lock near the quota: %v", err)
	}
	if err := unlock(sc.Client, "model-load", session); err != nil {
		t.Fatalf("unlock near the quota: %v", err)
	}
	if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim,
		Result: payload(t, map[string]any{"path": "/data/out/" + task.Id + ".wav"})})); err != nil {
		t.Fatalf("complete near the quota: %v", err)
	}
	endSession()
	var mu sync.Mutex
	done := map[string]int{task.Id: 1}

	// Workers drain the queue: every pending task is claimed and completed.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(time.Second)}))
				if connect.CodeOf(err) == connect.CodeUnavailable && ctx.Err() == nil {
					continue // etcd slow to answer (a loaded machine): retry, as workers do
				}
				if err != nil {
					errs <- fmt.Errorf("next: %w", err)
					return
				}
				task := resp.Msg.GetTask()
				if task == nil {
					return
				}
				if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim,
					Result: payload(t, map[string]any{"path": "/data/out/" + task.Id + ".wav"})})); err != nil {
					errs <- fmt.Errorf("complete %s: %w", task.Id, err)
					return
				}
				mu.Lock()
				done[task.Id]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(done) != len(created) {
		t.Fatalf("%d of %d tasks completed", len(done), len(created))
	}
	for id, n := range done {
		if !created[id] || n != 1 {
			t.Fatalf("task %s completed %d times (created: %v)", id, n, created[id])
		}
	}
	// etcd agrees: every task of the batch is DONE.
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	counts, err := store.BatchWatch(ctx, cli.Watcher, "corpus", func(workqueue.BatchCounts) bool { return false })
	if err != nil || counts.Total != len(created) || counts.States[workqueue.StateDone] != len(created) {
		t.Fatalf("batch in etcd: %+v, %v; want %d tasks, all DONE", counts, err, len(created))
	}
	noAlarm("after the drain")
	if st, err := cli.Status(ctx, srv.Endpoint()); err == nil {
		t.Logf("after the drain: database %d bytes", st.DbSize)
	}

	// The routine of docs/operations.md: compact, defragment; then submits
	// are admitted again.
	st, err = cli.Status(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	// Physical: the defragmentation must not run before the compaction has
	// freed the old revisions (on a loaded machine it could, and the
	// database stayed as large as before).
	if _, err := cli.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !strings.Contains(err.Error(), "compacted") {
		t.Fatal(err)
	}
	if _, err := cli.Defragment(ctx, srv.Endpoint()); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{bigSpec(1_000_000)}})); err != nil {
		t.Fatalf("submit after compaction and defragmentation: %v", err)
	}
}
