package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// baton measures the real path. Sidecars run as separate `baton sidecar`
// processes (Config.Sidecars of them, fewer when there are fewer
// consumers), so their CPU time and memory can be read from /proc. The
// tasks are submitted through the sidecars' Submit calls (not timed);
// then every consumer, with its own connection to one sidecar's socket and
// its own worker session (Attach), loops Next → Complete, as a worker
// process does. Conflicts are the claim transactions the sidecars lost,
// from the counters each logs when it stops.
//
// Dispatch latency is measured afterwards on fresh sidecars, so that its
// conflicts are counted apart: with every consumer idle in Next, tasks
// are submitted one at a time through the sidecars in turn, and the time
// from the Submit call to the consumer holding the task is recorded.
func (r *runner) baton(ctx context.Context, consumers int) (Result, error) {
	name := pointName(SystemBaton, consumers)
	nsc := r.conns(consumers)
	ps, err := startSidecars(ctx, r.cfg.Sidecar, r.cfg.Etcd, r.ns(name+"/drain"), r.dir, nsc)
	if err != nil {
		return Result{}, err
	}
	defer stopSidecars(ps) // after the stop below, a no-op
	cs := clients(ps, consumers)
	defer closeClients(cs)
	if err := submit(ctx, cs[:nsc], 0, r.cfg.Tasks, taskID); err != nil {
		return Result{}, err
	}
	sess, err := attach(ctx, cs)
	if err != nil {
		return Result{}, err
	}
	defer sess.close()

	// Memory and CPU are what serving the consumers took: the peak RSS
	// of submitting the tasks does not count.
	if err := resetPeaks(ps); err != nil {
		return Result{}, err
	}
	cpu0, err := sampleCPU(ps)
	if err != nil {
		return Result{}, err
	}
	m0, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	lats := make([]latencies, consumers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	t := newTally(r.cfg.Tasks, stop)
	began, err := race(wctx, consumers, func(ctx context.Context, i int) error {
		c, session := cs[i], sess.ids[i]
		for {
			t0 := time.Now()
			task, err := next(ctx, c, session, 2*time.Second)
			if err != nil {
				return ignoreDone(ctx, err)
			}
			if task == nil {
				continue
			}
			lats[i].add(time.Since(t0))
			if err := complete(ctx, c, task); err != nil {
				return ignoreDone(ctx, err)
			}
			t.deliver(task.GetId())
		}
	})
	if err != nil {
		return Result{}, err
	}
	m1, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	cpu1, err := sampleCPU(ps)
	if err != nil {
		return Result{}, err
	}
	rss, err := peakRSS(ps)
	if err != nil {
		return Result{}, err
	}
	sess.close()
	st, err := stopAndCount(ps)
	if err != nil {
		return Result{}, err
	}

	c := counts{began: began, conflicts: st.Conflicts, revs: m1.rev - m0.rev, cpu: m1.cpu - m0.cpu, lat: merge(lats)}
	c.delivered, c.duplicates, c.end = t.result()
	res, err := r.result(SystemBaton, consumers, r.cfg.Tasks, c)
	if err != nil {
		return res, err
	}
	d, err := r.dispatch(ctx, name, consumers)
	if err != nil {
		return res, fmt.Errorf("dispatch: %w", err)
	}
	res.Sidecars = ptr(nsc)
	res.SidecarRSSMB = ptr(round(float64(rss)/(1<<20), 1))
	res.SidecarCPUMSPerTask = ptr(round(ms(cpu1-cpu0)/float64(c.delivered), 3))
	res.DispatchP50MS = ptr(round(d.lat.quantile(0.50), 3))
	res.DispatchP99MS = ptr(round(d.lat.quantile(0.99), 3))
	res.DispatchConflictsPerTask = ptr(round(float64(d.conflicts)/float64(d.tasks), 3))
	return res, nil
}

func sumStats(ps []*sidecarProc) (dispatcherStats, error) {
	var sum dispatcherStats
	var errs []error
	for _, p := range ps {
		s, err := p.stats()
		errs = append(errs, err)
		sum.Claims += s.Claims
		sum.Conflicts += s.Conflicts
	}
	return sum, errors.Join(errs...)
}

type dispatchResult struct {
	lat       latencies
	tasks     int // delivered, untimed warm-up included
	conflicts int64
}

type delivery struct {
	id string
	at time.Time
}

// dispatch measures submit-to-start latency with idle consumers.
func (r *runner) dispatch(ctx context.Context, name string, consumers int) (dispatchResult, error) {
	nsc := r.conns(consumers)
	ps, err := startSidecars(ctx, r.cfg.Sidecar, r.cfg.Etcd, r.ns(name+"/dispatch"), r.dir, nsc)
	if err != nil {
		return dispatchResult{}, err
	}
	defer stopSidecars(ps) // after the stop below, a no-op
	cs := clients(ps, consumers)
	defer closeClients(cs)
	producers := clients(ps, nsc)
	defer closeClients(producers)
	sess, err := attach(ctx, cs)
	if err != nil {
		return dispatchResult{}, err
	}
	defer sess.close()

	got := make(chan delivery)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(wctx)
	for i := range consumers {
		g.Go(func() error {
			c, session := cs[i], sess.ids[i]
			for {
				task, err := next(gctx, c, session, 30*time.Second)
				if err != nil {
					return ignoreDone(gctx, err)
				}
				if task == nil {
					continue
				}
				at := time.Now()
				if err := complete(gctx, c, task); err != nil {
					return ignoreDone(gctx, err)
				}
				select {
				case got <- delivery{id: task.GetId(), at: at}:
				case <-gctx.Done():
					return nil
				}
			}
		})
	}
	var res dispatchResult
	produce := func() error {
		const within = 10 * time.Second
		timeout := time.NewTimer(within)
		defer timeout.Stop()
		for i := range warmup + r.cfg.DispatchSamples {
			id := fmt.Sprintf("d-%05d", i)
			t0 := time.Now()
			if err := submit(gctx, producers[i%nsc:i%nsc+1], i, i+1, func(int) string { return id }); err != nil {
				return err
			}
			timeout.Reset(within)
			select {
			case d := <-got:
				if d.id != id {
					return fmt.Errorf("consumer got %s while %s was the only task submitted", d.id, id)
				}
				if i >= warmup {
					res.lat.add(d.at.Sub(t0))
				}
			case <-timeout.C:
				return fmt.Errorf("task %s not delivered within 10s of its submit", id)
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	}
	err = produce()
	stop()
	if err := errors.Join(err, g.Wait(), ctx.Err()); err != nil {
		return res, err
	}
	sess.close()
	st, err := stopAndCount(ps)
	if err != nil {
		return res, err
	}
	res.conflicts = st.Conflicts
	res.tasks = warmup + r.cfg.DispatchSamples
	return res, nil
}
