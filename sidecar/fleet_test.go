package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// startFleet starts n sidecars on queue tts in one namespace, each
// configured by cfg(i).
func startFleet(t *testing.T, n int, cfg func(i int) sidecar.Config) ([]*sidecartest.Sidecar, string) {
	t.Helper()
	ns := sidecartest.Namespace(t)
	fleet := make([]*sidecartest.Sidecar, n)
	for i := range fleet {
		c := sidecar.Config{}
		if cfg != nil {
			c = cfg(i)
		}
		c.Queues = []string{"tts"}
		c.WorkerID = fmt.Sprintf("gpu-%d", i)
		fleet[i] = sidecartest.StartSidecar(t, endpoint, ns, c)
	}
	return fleet, ns
}

// leader waits until exactly one sidecar of the fleet is the scheduler
// and returns its index.
func leader(t *testing.T, fleet []*sidecartest.Sidecar, skip int) int {
	t.Helper()
	at := -1
	waitFor(t, 30*time.Second, "one scheduler elected", func() bool {
		at = -1
		for i, sc := range fleet {
			if i == skip || sc.Dispatcher() == nil || !sc.Dispatcher().Leading() {
				continue
			}
			if at >= 0 {
				return false
			}
			at = i
		}
		return at >= 0
	})
	return at
}

// nextAsync starts a Next on sc and returns the channel its task arrives on
// (nil task when the wait ends empty).
func nextAsync(t *testing.T, sc *sidecartest.Sidecar, wait time.Duration) <-chan *batonv1.Task {
	ch := make(chan *batonv1.Task, 1)
	go func() {
		resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(wait)}))
		if err != nil {
			t.Logf("next: %v", err) // the test checks for a nil task
			ch <- nil
			return
		}
		ch <- resp.Msg.GetTask()
	}()
	return ch
}

// One scheduler per fleet assigns every task, and a task requiring labels
// goes only to a sidecar that has them, even when others wait longer.
func TestRequireGoesToLabelledSidecar(t *testing.T) {
	t.Parallel()
	fleet, ns := startFleet(t, 3, func(i int) sidecar.Config {
		if i == 2 {
			return sidecar.Config{Labels: map[string]string{"model": "indextts2"}}
		}
		return sidecar.Config{Labels: map[string]string{"model": "glm-tts"}}
	})
	leader(t, fleet, -1)
	// The unlabelled-for-it sidecars wait first.
	older := nextAsync(t, fleet[0], 20*time.Second)
	waitFor(t, 10*time.Second, "first waiter registered", func() bool { return waitKeys(t, ns) == 1 })
	younger := nextAsync(t, fleet[1], 20*time.Second)
	waitFor(t, 10*time.Second, "second waiter registered", func() bool { return waitKeys(t, ns) == 2 })
	labelled := nextAsync(t, fleet[2], 20*time.Second)
	submit(t, fleet[0], &batonv1.TaskSpec{Id: "needs-indextts2", Payload: payload(t, map[string]any{}), Require: map[string]string{"model": "indextts2"}})
	task := <-labelled
	if task == nil || task.Id != "needs-indextts2" {
		t.Fatalf("labelled sidecar got %v", task)
	}
	submit(t, fleet[0], &batonv1.TaskSpec{Id: "any", Payload: payload(t, map[string]any{})})
	select {
	case got := <-older:
		if got == nil || got.Id != "any" {
			t.Fatalf("oldest waiter got %v", got)
		}
	case got := <-younger:
		t.Fatalf("the younger waiter got %v before the older one", got)
	}
	// The scheduler counts an assignment when it reads its transaction's
	// answer, which may come after the waiter saw the assignment.
	assigned := func() (n int64) {
		for _, sc := range fleet {
			n += sc.Dispatcher().Stats().Assigned
		}
		return n
	}
	waitFor(t, 10*time.Second, "two assignments counted", func() bool { return assigned() >= 2 })
	if n := assigned(); n != 2 {
		t.Fatalf("%d assignments, want 2 (one per task, by the scheduler)", n)
	}
}

// waitKeys counts the fleet's wait keys still waiting, read from etcd.
func waitKeys(t *testing.T, ns string) int {
	t.Helper()
	cli := sidecartest.Client(t, endpoint, ns)
	resp, err := cli.Get(context.Background(), "q/w/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		var rec struct{ T string }
		if json.Unmarshal(kv.Value, &rec) == nil && rec.T == "" {
			n++
		}
	}
	return n
}

// A worker that handled a speaker gets that speaker's next task, not the
// oldest one.
func TestAffinityPrefersTheWorkerThatHasTheKey(t *testing.T) {
	t.Parallel()
	fleet, _ := startFleet(t, 2, nil)
	leader(t, fleet, -1)
	a, b := fleet[0], fleet[1]
	submit(t, a, &batonv1.TaskSpec{Id: "a1", Payload: payload(t, map[string]any{}), Affinity: "spk-a"})
	first := next(t, a, 10*time.Second, "")
	if first == nil || first.Id != "a1" {
		t.Fatalf("a got %v", first)
	}
	complete(t, a, first)
	submit(t, b, &batonv1.TaskSpec{Id: "b1", Payload: payload(t, map[string]any{}), Affinity: "spk-b"})
	if got := next(t, b, 10*time.Second, ""); got == nil || got.Id != "b1" {
		t.Fatalf("b got %v", got)
	} else {
		complete(t, b, got)
	}
	// Oldest first is spk-b's task; a holds spk-a and asks first.
	submit(t, a,
		&batonv1.TaskSpec{Id: "b2", Payload: payload(t, map[string]any{}), Affinity: "spk-b"},
		&batonv1.TaskSpec{Id: "a2", Payload: payload(t, map[string]any{}), Affinity: "spk-a"},
	)
	if got := next(t, a, 10*time.Second, ""); got == nil || got.Id != "a2" {
		t.Fatalf("a got %v, want a2 (its speaker)", got)
	}
	if got := next(t, b, 10*time.Second, ""); got == nil || got.Id != "b2" {
		t.Fatalf("b got %v, want b2", got)
	}
}

func complete(t *testing.T, sc *sidecartest.Sidecar, task *batonv1.Task) {
	t.Helper()
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
		t.Fatalf("complete %s: %v", task.Id, err)
	}
}

// When the scheduler's sidecar stops, another is elected and the
// fleet's waiting workers are served without registering again.
func TestSchedulerFailover(t *testing.T) {
	t.Parallel()
	fleet, ns := startFleet(t, 3, nil)
	old := leader(t, fleet, -1)
	other := (old + 1) % len(fleet)
	wait := nextAsync(t, fleet[other], 30*time.Second)
	waitFor(t, 10*time.Second, "waiter registered", func() bool { return waitKeys(t, ns) == 1 })
	if err := fleet[old].Stop(); err != nil {
		t.Fatal(err)
	}
	leader(t, fleet, old)
	submit(t, fleet[other], &batonv1.TaskSpec{Id: "after-failover", Payload: payload(t, map[string]any{})})
	if got := <-wait; got == nil || got.Id != "after-failover" {
		t.Fatalf("waiting worker got %v after the scheduler stopped", got)
	}
}
