package batoncli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bounded feeding (`baton submit --max-pending N`): the tasks of a file
// are written in line order, and a task is written only while fewer than
// N of the file's tasks are unfinished in etcd. A workqueue.Outstanding
// follows the states of the tasks written (one watch on the state prefix),
// so the command waits on events, not by polling.
//
// Resuming needs nothing local: task ids are derived from the lines, so a
// second run walks the file from its first line again; Submit leaves the
// tasks that exist alone, and their states are read (Settle), so that the
// unfinished ones count against N and the finished ones do not. A task is
// created only after every line before it has been walked, hence counted.

// feeder writes the chunks of a file, bounded when out is set.
type feeder struct {
	store *workqueue.Store
	out   *workqueue.Outstanding // nil: every task is written at once
	max   int                    // at most this many of the file's tasks unfinished
	step  int                    // the least room worth a transaction, so that finishing tasks one at a time does not write one task per submit
	errw  io.Writer
	opts  []workqueue.SubmitOption

	stop func() // ends out's Run and waits for it
}

// startFeeder returns a feeder for a file of tasks with at most maxPending
// unfinished at once (0: no bound). Call stop when done.
func startFeeder(ctx context.Context, store *workqueue.Store, w clientv3.Watcher, maxPending int, errw io.Writer, opts []workqueue.SubmitOption) (*feeder, error) {
	f := &feeder{store: store, max: maxPending, step: max(1, maxPending/8), errw: errw, opts: opts, stop: func() {}}
	if maxPending == 0 {
		return f, nil
	}
	out, err := store.StartOutstanding(ctx, w)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = out.Run(rctx) // its error reaches write through WaitBelow
	}()
	f.out, f.stop = out, func() { cancel(); wg.Wait() }
	return f, nil
}

// pending returns how many of the file's tasks are unfinished, as far as
// the feeder knows; -1 when feeding is not bounded.
func (f *feeder) pending() int {
	if f.out == nil {
		return -1
	}
	return f.out.Len()
}

// write submits specs, waiting for room when bounded. progress is called
// with the number of specs of this call written (or found existing).
func (f *feeder) write(ctx context.Context, specs []workqueue.Spec, progress func(n int)) (created, existing int, pin *workqueue.Pin, err error) {
	if f.out == nil {
		res, err := f.submit(ctx, specs, append(f.opts, workqueue.WithProgress(func(n, _ int) { progress(n) })))
		if err != nil {
			return 0, 0, nil, err
		}
		created, existing = res.Counts()
		return created, existing, res.Pin, nil
	}
	done := 0
	for done < len(specs) {
		rest := specs[done:]
		if err := f.out.WaitBelow(ctx, f.max-min(len(rest), f.step)); err != nil {
			return created, existing, pin, fmt.Errorf("following the tasks' states: %w", err)
		}
		piece := rest[:min(len(rest), f.max-f.out.Len())]
		ids := make([]string, len(piece))
		for i := range piece {
			ids[i] = piece[i].ID
		}
		f.out.Add(ids)
		res, err := f.submit(ctx, piece, f.opts)
		f.out.Created(ids)
		var qe *workqueue.QuotaError
		if errors.As(err, &qe) && f.out.Len() > len(ids) {
			// Nothing of the piece was written. Others filled etcd: wait
			// for one of the file's tasks to finish, then try again.
			if err := f.out.Settle(ctx, ids); err != nil {
				return created, existing, pin, err
			}
			fmt.Fprintf(f.errw, "\n%v\nwaiting for tasks to finish (%d of this file unfinished)\n", err, f.out.Len())
			if err := f.out.WaitBelow(ctx, f.out.Len()-1); err != nil {
				return created, existing, pin, fmt.Errorf("following the tasks' states: %w", err)
			}
			continue
		}
		if err != nil {
			return created, existing, pin, err
		}
		var old []string
		for i, c := range res.Created {
			if c {
				created++
			} else {
				existing++
				old = append(old, ids[i])
			}
		}
		if err := f.out.Settle(ctx, old); err != nil {
			return created, existing, pin, err
		}
		if pin == nil {
			pin = res.Pin
		}
		done += len(piece)
		progress(done)
	}
	return created, existing, pin, nil
}

// submit writes specs; it has 10 minutes to (a submit of a chunk is about
// 30 transactions).
func (f *feeder) submit(ctx context.Context, specs []workqueue.Spec, opts []workqueue.SubmitOption) (workqueue.SubmitResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	return f.store.Submit(ctx, specs, opts...)
}
