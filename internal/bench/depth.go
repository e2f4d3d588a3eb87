package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// depth measures the claim cost (Next through one sidecar's socket, one
// worker, one claim at a time) with `pending` tasks waiting. After each
// claim is completed another task is submitted (not timed), so the depth
// stays the same throughout. The first few claims are not timed.
func (r *runner) depth(ctx context.Context, pending int) (Depth, error) {
	name := fmt.Sprintf("depth-%d", pending)
	defer r.cleanup(context.Background(), name)
	ps, err := startSidecars(ctx, r.cfg.Sidecar, r.cfg.Etcd, r.ns(name), r.dir, 1)
	if err != nil {
		return Depth{}, err
	}
	defer func() { _ = stopSidecars(ps) }()
	cs := clients(ps, 1)
	defer closeClients(cs)
	t0 := time.Now()
	if err := submit(ctx, cs, 0, pending, taskID); err != nil {
		return Depth{}, err
	}
	loaded := time.Since(t0)
	sess, err := attach(ctx, cs)
	if err != nil {
		return Depth{}, err
	}
	defer sess.close()
	var claim, done latencies
	for i := range warmup + r.cfg.Samples {
		if i == warmup {
			claim, done = nil, nil
		}
		t0 := time.Now()
		task, err := next(ctx, cs[0], sess.ids[0], 5*time.Second)
		if err != nil {
			return Depth{}, err
		}
		if task == nil {
			return Depth{}, errors.New("no task within 5s")
		}
		t1 := time.Now()
		if err := complete(ctx, cs[0], task); err != nil {
			return Depth{}, err
		}
		claim.add(t1.Sub(t0))
		done.add(time.Since(t1))
		if err := submit(ctx, cs, pending+i, pending+i+1, taskID); err != nil {
			return Depth{}, err
		}
	}
	return Depth{
		Pending: pending, Samples: len(claim), LoadSeconds: round(loaded.Seconds(), 2),
		ClaimP50MS: round(claim.quantile(0.5), 3), ClaimP99MS: round(claim.quantile(0.99), 3),
		CompleteP50MS: round(done.quantile(0.5), 3), CompleteP99MS: round(done.quantile(0.99), 3),
		Load1: loadAvg()[0],
	}, nil
}
