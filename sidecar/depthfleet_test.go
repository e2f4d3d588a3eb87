package sidecar_test

import (
	"fmt"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// TestQueueDepthIsOneValuePerFleet: the autoscalers' query (the max over
// sidecars of baton_queue_depth_tasks per queue and state, see
// deploy/observability/baton-rules.yml) gives the queue's depth, before and
// after the scheduler changes: only the scheduler reports a non-zero value,
// so neither the max nor the sum over sidecars counts a task twice.
func TestQueueDepthIsOneValuePerFleet(t *testing.T) {
	const q = "depth"
	ns := sidecartest.Namespace(t)
	cfg := sidecar.Config{Queues: []string{q}, AdminAddr: "127.0.0.1:0", Queue: workqueue.Config{DepthInterval: 50 * time.Millisecond}}
	fleet := []*sidecartest.Sidecar{sidecartest.StartSidecar(t, endpoint, ns, cfg), sidecartest.StartSidecar(t, endpoint, ns, cfg), sidecartest.StartSidecar(t, endpoint, ns, cfg)}
	var specs []*batonv1.TaskSpec
	for i := range 5 {
		specs = append(specs, &batonv1.TaskSpec{Id: fmt.Sprintf("d%d", i), Queue: q, Payload: payload(t, map[string]any{"n": i})})
	}
	submit(t, fleet[0], specs...)

	// waitFleet polls the live sidecars' /metrics until the max over them
	// is want pending and exactly one reports a non-zero value.
	waitFleet := func(live []*sidecartest.Sidecar, want float64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var maxV, sum float64
			nonzero := 0
			for _, sc := range live {
				v, _ := value(scrape(t, sc), "baton_queue_depth_tasks", "queue", q, "state", "pending")
				maxV, sum = max(maxV, v), sum+v
				if v != 0 {
					nonzero++
				}
			}
			if maxV == want && sum == want && nonzero == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pending over the fleet: max %v, sum %v, %d sidecars non-zero; want %v from one", maxV, sum, nonzero, want)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
	waitFleet(fleet, 5)

	// The scheduler stops; another is elected and reports the same depth.
	var sched int
	for i, sc := range fleet {
		if v, _ := value(scrape(t, sc), "baton_scheduler_leader"); v == 1 {
			sched = i
		}
	}
	if err := fleet[sched].Stop(); err != nil {
		t.Fatal(err)
	}
	live := append(append([]*sidecartest.Sidecar{}, fleet[:sched]...), fleet[sched+1:]...)
	submit(t, live[0], &batonv1.TaskSpec{Id: "d5", Queue: q, Payload: payload(t, map[string]any{"n": 5})})
	waitFleet(live, 6)
}
