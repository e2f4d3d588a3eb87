package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
	"golang.org/x/sync/errgroup"
)

// stopItem ends a recipes consumer. recipe.Queue.Dequeue takes no context
// and blocks on an empty queue (and crashes if its watch is closed under
// it), so consumers are stopped by items queued behind the tasks.
const stopItem = "\x00stop"

// recipes measures etcd's own client/v3/experimental/recipes Queue: the
// tasks are enqueued first (not timed), then the consumers Dequeue them.
// Dequeue reads the first item by mod revision and deletes it with a
// compare-and-delete, retrying on conflict; each failed compare counts as
// a conflict.
func (r *runner) recipes(ctx context.Context, consumers int) (Result, error) {
	name := pointName(SystemRecipes, consumers)
	var failed atomic.Int64
	clis, err := r.clients(name, r.conns(consumers), &failed)
	if err != nil {
		return Result{}, err
	}
	defer closeEtcd(clis)
	queues := make([]*recipe.Queue, len(clis))
	for i, c := range clis {
		queues[i] = recipe.NewQueue(c, "q")
	}
	// Enqueue from as many goroutines as there are connections, then the
	// stop items behind every task.
	g, gctx := errgroup.WithContext(ctx)
	for i := range queues {
		g.Go(func() error {
			for n := i; n < r.cfg.Tasks; n += len(queues) {
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := queues[i].Enqueue(taskID(n)); err != nil {
					return fmt.Errorf("enqueue: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	for range consumers {
		if err := queues[0].Enqueue(stopItem); err != nil {
			return Result{}, fmt.Errorf("enqueue: %w", err)
		}
	}

	m0, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	failed0 := failed.Load()
	lats := make([]latencies, consumers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	// Conflicts are counted up to the last delivery: the stop items'
	// races afterwards are not part of the measurement.
	var failedEnd atomic.Int64
	t := newTally(r.cfg.Tasks, func() { failedEnd.Store(failed.Load()); stop() })
	// If the run is cancelled or a consumer fails, empty the queue and put
	// a stop item for each consumer, so that none stays blocked.
	aborted := make(chan struct{})
	go func() {
		defer close(aborted)
		<-wctx.Done()
		if _, _, end := t.result(); !end.IsZero() {
			return
		}
		actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = clis[0].Delete(actx, "q/", clientv3.WithPrefix())
		for range consumers {
			_, _ = clis[0].Put(actx, fmt.Sprintf("q/%d", time.Now().UnixNano()), stopItem)
		}
	}()
	began, err := race(context.Background(), consumers, func(_ context.Context, i int) error {
		q := queues[i%len(queues)]
		for {
			t0 := time.Now()
			v, err := q.Dequeue()
			if err != nil {
				stop()
				return fmt.Errorf("dequeue: %w", err)
			}
			if v == stopItem {
				return nil
			}
			lats[i].add(time.Since(t0))
			t.deliver(v)
		}
	})
	stop()
	<-aborted
	if err := errors.Join(ctx.Err(), err); err != nil {
		return Result{}, err
	}
	m1, err := r.mark(ctx)
	if err != nil {
		return Result{}, err
	}
	// The stop items' deletions are not part of the measurement.
	c := counts{began: began, conflicts: failedEnd.Load() - failed0, revs: m1.rev - m0.rev - int64(consumers), cpu: m1.cpu - m0.cpu, lat: merge(lats)}
	c.delivered, c.duplicates, c.end = t.result()
	return r.result(SystemRecipes, consumers, r.cfg.Tasks, c)
}

func taskID(n int) string { return fmt.Sprintf("t-%07d", n) }
