package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// fleetSweep measures one fleet size: n in-process sidecars (fleet.go),
// one consumer per sidecar over that sidecar's socket. First dispatch to
// idle workers: every consumer waits in Next and tasks are submitted one
// at a time, each after the previous one was completed; latency runs from
// the submit's return to the consumer's Next returning the task. Then the
// backlog: FleetTasks tasks submitted at once and drained by the n
// consumers with zero-work tasks. Each phase's cost per task comes from
// etcd's own metrics, etcd's revision, the fleet's claim counters and the
// CPU time of this process (the fleet and its consumers) and of etcd.
func (r *runner) fleetSweep(ctx context.Context, n int) (FleetResult, error) {
	name := fmt.Sprintf("fleet-%d", n)
	defer r.cleanup(context.Background(), name)
	ec := r.cfg.Etcd
	ec.Namespace = r.ns(name)
	t0 := time.Now()
	f, err := startFleet(ctx, ec, r.dir, n)
	if err != nil {
		return FleetResult{}, err
	}
	res := FleetResult{Sidecars: n, StartSeconds: round(time.Since(t0).Seconds(), 2)}
	err = r.onFleet(ctx, f, ec, func(w *workers) error {
		idle, err := r.idleDispatch(ctx, w)
		if err != nil {
			return fmt.Errorf("dispatch to idle workers: %w", err)
		}
		res.DispatchSamples = len(idle.lat)
		res.DispatchP50MS = round(idle.lat.quantile(0.50), 3)
		res.DispatchP99MS = round(idle.lat.quantile(0.99), 3)
		res.DispatchConflictsPerTask = idle.cost.ClaimConflictsPerTask
		res.Idle = idle.cost
		d, err := r.drain(ctx, w, "b", r.cfg.FleetTasks, nil)
		if err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
		res.Tasks, res.Delivered, res.Duplicates = d.tasks, d.delivered, d.duplicates
		res.Seconds, res.TasksPerS = d.seconds, d.tasksPerS
		res.ConflictsPerTask = d.cost.ClaimConflictsPerTask
		res.Drain = d.cost
		res.Unavailable, res.LostClaims, res.AmbiguousCompletes = w.h.unavailable.Load(), w.h.lostClaims.Load(), w.h.ambiguous.Load()
		if m, err := scrapeEtcd(ctx, r.cfg.EtcdMetrics); err == nil {
			res.EtcdWatchers = int(m.Watchers)
		}
		if rss, _, err := procMem(os.Getpid()); err == nil {
			res.BenchRSSMB = round(float64(rss)/(1<<20), 1)
		}
		return nil
	})
	res.Load1 = loadAvg()[0]
	return res, err
}

// workers are the consumers of a fleet: one client, worker session and
// producer of the bench's own.
type workers struct {
	f    *fleet
	cs   []*client.Client
	sess *sessions
	prod *workqueue.Store
	h    hiccups
}

// onFleet attaches one consumer to each sidecar of f, runs measure, then
// closes the sessions and stops the fleet, returning the first error.
func (r *runner) onFleet(ctx context.Context, f *fleet, ec etcdconn.Config, measure func(*workers) error) error {
	cs := f.clients()
	defer closeClients(cs)
	err := func() error {
		pcli, err := etcdconn.New(ec)
		if err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		defer pcli.Close()
		prod, err := workqueue.NewStore(pcli.KV, workqueue.Config{})
		if err != nil {
			return err
		}
		sess, err := attach(ctx, cs)
		if err != nil {
			return err
		}
		defer sess.close()
		if err := awaitRegistered(ctx, pcli.KV, len(cs)); err != nil {
			return err
		}
		return measure(&workers{f: f, cs: cs, sess: sess, prod: prod})
	}()
	return errors.Join(err, f.stop())
}

// awaitRegistered waits until the registry entries of n sidecars each list
// an open session. Each sidecar rewrites its entry when a session opens,
// up to registry.SessionsInterval later: measured before, those n writes
// would be counted against the first phase's tasks (one more transaction
// per task at 256 sidecars and 200 tasks).
func awaitRegistered(ctx context.Context, kv clientv3.KV, n int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		es, err := registry.List(ctx, kv)
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		listed := 0
		for _, e := range es {
			if len(e.Sessions) > 0 {
				listed++
			}
		}
		if listed >= n {
			return nil
		}
		pause(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return fmt.Errorf("registry: %d of %d sidecars list their session: %w", listed, n, ctx.Err())
		}
	}
}

// fleetSpec is task id's spec; a non-empty speaker goes into the payload
// (where consumers read it) and, when affinity is set, into Spec.Affinity.
func fleetSpec(id string, n int, speaker string, affinity bool) workqueue.Spec {
	p := map[string]any{"n": n, "syn_text": "bench"}
	if speaker != "" {
		p["speaker"] = speaker
	}
	b, _ := json.Marshal(p)
	sp := workqueue.Spec{ID: id, Queue: queue, Payload: b}
	if affinity {
		sp.Affinity = speaker
	}
	return sp
}

func speakerOf(t *batonv1.Task) string {
	return t.GetPayload().GetFields()["speaker"].GetStringValue()
}

// hiccups count the answers a worker is told to retry: Next refused as
// Unavailable (the sidecar is between leases) and Complete refused as
// FailedPrecondition (the claim was lost, the task goes back to the
// queue). A worker retries both; so do the bench's consumers, and the
// report shows how often.
//
// ambiguous counts the Completes answered UNAVAILABLE and then
// FailedPrecondition (errAmbiguousComplete): they are counted as done, so
// a drain can end up to that many tasks early.
type hiccups struct {
	unavailable, lostClaims, ambiguous atomic.Int64
}

// retryAfter is how long a consumer waits after an Unavailable answer, as
// a worker backs off before asking again.
const retryAfter = 50 * time.Millisecond

// consume loops Next → Complete over c under session until ctx ends, and
// calls done after each Complete with when Next returned the task.
func consume(ctx context.Context, c *client.Client, session string, wait time.Duration, h *hiccups, done func(t *batonv1.Task, at time.Time) error) error {
	for {
		task, err := next(ctx, c, session, wait)
		if err != nil && ctx.Err() == nil && connect.CodeOf(err) == connect.CodeUnavailable {
			h.unavailable.Add(1)
			pause(ctx, retryAfter)
			continue
		}
		if err != nil {
			return ignoreDone(ctx, err)
		}
		if task == nil {
			continue
		}
		at := time.Now()
		if err := complete(ctx, c, task); err != nil {
			switch {
			case errors.Is(err, errAmbiguousComplete):
				h.ambiguous.Add(1) // and counted as done
			case ctx.Err() == nil && connect.CodeOf(err) == connect.CodeFailedPrecondition:
				h.lostClaims.Add(1)
				continue
			default:
				return ignoreDone(ctx, err)
			}
		}
		if err := done(task, at); err != nil {
			return err
		}
	}
}

// costMark is a point in a phase: etcd's counters and revision, the
// fleet's claim conflicts, and CPU time.
type costMark struct {
	etcd      etcdMetrics
	rev       int64
	conflicts int64
	cpu       time.Duration // this process: the fleet and its consumers
	etcdCPU   time.Duration // the etcd process, when the bench started it
}

func (r *runner) costMark(ctx context.Context, f *fleet) (costMark, error) {
	var m costMark
	var err error
	if m.etcd, err = scrapeEtcd(ctx, r.cfg.EtcdMetrics); err != nil {
		return m, err
	}
	resp, err := r.meta.Get(ctx, "rev", clientv3.WithCountOnly())
	if err != nil {
		return m, err
	}
	m.rev = resp.Header.Revision
	_, m.conflicts = f.claimStats()
	if m.cpu, err = selfCPU(); err != nil {
		return m, err
	}
	if r.cfg.EtcdPID > 0 {
		if m.etcdCPU, err = procCPU(r.cfg.EtcdPID); err != nil {
			return m, err
		}
	}
	return m, nil
}

// costPerTask divides what happened between a and b by tasks.
func (r *runner) costPerTask(a, b costMark, tasks int) PhaseCost {
	per := func(v float64) float64 { return round(v/float64(tasks), 3) }
	e := b.etcd.minus(a.etcd)
	writes := float64(b.rev - a.rev)
	c := PhaseCost{
		Tasks:                 tasks,
		TxnsPerTask:           per(e.Proposals),
		WritesPerTask:         per(writes),
		FailedTxnsPerTask:     per(max(0, e.Proposals-writes)),
		ClaimConflictsPerTask: per(float64(b.conflicts - a.conflicts)),
		KVRequestsPerTask:     per(e.KVRequests),
		WatchEventsPerTask:    per(e.Events),
		SentBytesPerTask:      round(e.SentBytes/float64(tasks), 0),
		CPUMSPerTask:          per(ms(b.cpu - a.cpu)),
	}
	if r.cfg.EtcdPID > 0 {
		c.EtcdCPUMSPerTask = ptr(per(ms(b.etcdCPU - a.etcdCPU)))
	}
	return c
}

type idleResult struct {
	lat  latencies
	cost PhaseCost
}

// idleDispatch submits warmup + DispatchSamples tasks one at a time while
// every consumer waits in Next; the next task is submitted once the
// previous one was completed. The warm-up tasks are neither timed nor
// counted in the cost.
func (r *runner) idleDispatch(ctx context.Context, w *workers) (idleResult, error) {
	type delivery struct {
		id string
		at time.Time
	}
	got := make(chan delivery)
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(pctx)
	for i, c := range w.cs {
		g.Go(func() error {
			return consume(gctx, c, w.sess.ids[i], 30*time.Second, &w.h, func(t *batonv1.Task, at time.Time) error {
				select {
				case got <- delivery{id: t.GetId(), at: at}:
				case <-gctx.Done():
				}
				return nil
			})
		})
	}
	var res idleResult
	produce := func() error {
		const within = time.Minute
		timeout := time.NewTimer(within)
		defer timeout.Stop()
		var m0 costMark
		for i := range warmup + r.cfg.DispatchSamples {
			if i == warmup {
				var err error
				if m0, err = r.costMark(gctx, w.f); err != nil {
					return err
				}
			}
			id := fmt.Sprintf("d-%05d", i)
			if _, err := w.prod.Submit(gctx, []workqueue.Spec{fleetSpec(id, i, "", false)}); err != nil {
				return fmt.Errorf("submit: %w", err)
			}
			submitted := time.Now()
			timeout.Reset(within)
			select {
			case d := <-got:
				if d.id != id {
					return fmt.Errorf("consumer got %s while %s was the only task submitted", d.id, id)
				}
				if i >= warmup {
					res.lat.add(max(0, d.at.Sub(submitted)))
				}
			case <-timeout.C:
				return fmt.Errorf("task %s not delivered within %v of its submit", id, within)
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		m1, err := r.costMark(gctx, w.f)
		if err != nil {
			return err
		}
		res.cost = r.costPerTask(m0, m1, r.cfg.DispatchSamples)
		return nil
	}
	err := produce()
	stop()
	return res, errors.Join(err, g.Wait(), ctx.Err())
}

type drainResult struct {
	tasks, delivered, duplicates int
	seconds, tasksPerS           float64
	cost                         PhaseCost
	// hits and followers count, over the consumers, the tasks whose
	// speaker was that of the consumer's previous task, and the tasks that
	// had a previous task.
	hits, followers int
}

// drain submits tasks tasks at once (ids prefix-n; speaker(n) names the
// task's speaker when not nil, and its affinity key when affinity), then
// lets the consumers drain them. Throughput runs from the consumers'
// start to the last delivery; the cost covers the submit too.
func (r *runner) drain(ctx context.Context, w *workers, prefix string, tasks int, speaker func(n int) (key string, affinity bool)) (drainResult, error) {
	m0, err := r.costMark(ctx, w.f)
	if err != nil {
		return drainResult{}, err
	}
	specs := make([]workqueue.Spec, tasks)
	for n := range specs {
		var key string
		var aff bool
		if speaker != nil {
			key, aff = speaker(n)
		}
		specs[n] = fleetSpec(fmt.Sprintf("%s-%07d", prefix, n), n, key, aff)
	}
	if _, err := w.prod.Submit(ctx, specs); err != nil {
		return drainResult{}, fmt.Errorf("submit: %w", err)
	}
	n := len(w.cs)
	last := make([]string, n)
	hits, followers := make([]int, n), make([]int, n) // each consumer writes its own
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	t := newTally(tasks, stop)
	began, err := race(wctx, n, func(ctx context.Context, i int) error {
		return consume(ctx, w.cs[i], w.sess.ids[i], 2*time.Second, &w.h, func(task *batonv1.Task, _ time.Time) error {
			if k := speakerOf(task); k != "" {
				if last[i] != "" {
					followers[i]++
					if k == last[i] {
						hits[i]++
					}
				}
				last[i] = k
			}
			t.deliver(task.GetId())
			return nil
		})
	})
	if err != nil {
		return drainResult{}, err
	}
	m1, err := r.costMark(ctx, w.f)
	if err != nil {
		return drainResult{}, err
	}
	res := drainResult{tasks: tasks}
	var end time.Time
	res.delivered, res.duplicates, end = t.result()
	if end.IsZero() || res.delivered != tasks {
		return res, fmt.Errorf("%d of %d tasks delivered", res.delivered, tasks)
	}
	secs := end.Sub(began).Seconds()
	res.seconds, res.tasksPerS = round(secs, 3), round(float64(tasks)/secs, 1)
	res.cost = r.costPerTask(m0, m1, tasks)
	for i := range n {
		res.hits += hits[i]
		res.followers += followers[i]
	}
	return res, nil
}
