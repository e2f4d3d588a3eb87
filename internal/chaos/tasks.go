package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
)

// Queue is the queue every chaos task goes to.
const Queue = "chaos"

// taskMix: fake work of 200ms–2s; one task in five fails its first attempt
// on purpose; one in twenty fails every attempt and ends DEAD.
func (r *run) taskMix() []workqueue.Spec {
	var specs []workqueue.Spec
	for i := range r.cfg.Tasks {
		p := Payload{ID: fmt.Sprintf("t%04d", i), WorkMS: 200 + r.rng.IntN(1800)}
		switch n := r.rng.IntN(20); {
		case n == 0:
			p.FailAttempts = 99
		case n < 5:
			p.FailAttempts = 1
		}
		b, _ := json.Marshal(p)
		specs = append(specs, workqueue.Spec{ID: p.ID, Queue: Queue, Payload: b, MaxAttempts: 4})
	}
	return specs
}

// submit writes specs in waves of 10 spread over period, retrying a wave
// until etcd takes it (submits are idempotent). It returns the ids
// written.
func (r *run) submit(ctx context.Context, qs *workqueue.Store, specs []workqueue.Spec, period time.Duration) []string {
	var ids []string
	// Its own stream: the fault loop draws from r.rng concurrently.
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), 0x63616e63656c))
	waves := (len(specs) + 9) / 10
	gap := period / time.Duration(waves)
	for i := 0; i < len(specs); i += 10 {
		wave := specs[i:min(i+10, len(specs))]
		for ctx.Err() == nil {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := qs.Submit(sctx, wave)
			cancel()
			if err == nil {
				for _, s := range wave {
					ids = append(ids, s.ID)
				}
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
		if !sleepCtx(ctx, gap) {
			break
		}
		// Cancel a task of this wave now and then: pending ones end
		// CANCELLED at once, claimed ones when their worker gives up.
		if rng.IntN(3) == 0 {
			id := wave[rng.IntN(len(wave))].ID
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := qs.Cancel(cctx, id)
			cancel()
			if err == nil {
				r.mu.Lock()
				r.cancels++
				if res.State == workqueue.StateCancelled {
					r.cancelled = append(r.cancelled, id)
				}
				r.mu.Unlock()
			}
		}
	}
	return ids
}

// awaitFinished polls the tasks' statuses until all are finished or limit
// passes; it returns the last states read. It reads them as `baton tasks
// list` does (workqueue.Store.List), so a task never claimed, which has no
// state key, shows as PENDING.
func (r *run) awaitFinished(ctx context.Context, ids []string, limit time.Duration) (map[string]string, error) {
	deadline := time.Now().Add(limit)
	for {
		final := map[string]string{}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// The run's namespace holds only the tasks it submitted.
		tasks, _, err := r.qs.List(rctx, workqueue.ListFilter{Limit: len(ids) + 1000})
		cancel()
		done := err == nil
		if err == nil {
			for _, ti := range tasks {
				final[ti.ID] = string(ti.Status.State)
			}
			for _, id := range ids {
				if !workqueue.State(final[id]).Finished() {
					done = false
				}
			}
		}
		if done || time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return final, nil
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}
