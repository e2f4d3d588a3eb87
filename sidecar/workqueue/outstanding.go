package workqueue

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Outstanding follows a set of tasks until each is finished (DONE, DEAD,
// CANCELLED, or removed): what bounded feeding (`baton submit
// --max-pending`) counts. The set is the caller's: it Adds a task's id
// before submitting it, and Settles the ids that already existed, whose
// state it cannot know otherwise. Run follows the states with one watch on
// the state prefix, from the revision given by Start, and drops each task
// as it finishes. A task submitted ready has no state until it first moves
// (statuses.go); every finish writes or deletes its state, so the watch
// sees each one.
//
// Len over-counts, never under-counts, the tasks of the set that etcd holds
// unfinished: a finish is counted only once Run has seen it, and a task is
// added before it is written. Compares on mod revisions keep an old event
// seen late (after a Settle read a newer state) from dropping a task that
// an operator's retry made pending again.
//
// When the watch ends (compacted: this process fell behind by more than
// etcd's compaction interval; or failed), Run reads the states of the
// whole set again and watches on from there (statusFollower: at once after
// a compaction, after a second on the Store's clock otherwise). If etcd
// cannot answer that read, Run stops, and the submit with it. Memory is
// the set: about 100 bytes a task.
type Outstanding struct {
	kv       clientv3.KV
	maxOps   int
	startRev int64
	follower statusFollower

	mu sync.Mutex
	// ids holds the tasks followed, with the mod revision of the latest
	// state seen: inFlight while its submit is under way, 0 when it was
	// created and no state has been seen. Written by Add, Created and
	// Settle (the caller's goroutine) and by Run.
	ids     map[string]int64
	changed chan struct{} // receives (without blocking) after Run drops tasks
	runErr  error         // why Run stopped; written by Run
	stopped chan struct{} // closed when Run returns
}

// inFlight marks an id added for a submit that has not returned: a state
// that is not there yet does not mean the task is gone.
const inFlight = -1

// StartOutstanding returns an empty set whose Run follows states from the
// current revision: start Run before adding ids. Cancelling ctx abandons
// the read of the revision.
func (s *Store) StartOutstanding(ctx context.Context, w clientv3.Watcher) (*Outstanding, error) {
	resp, err := s.kv.Get(ctx, prefixState, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	o := &Outstanding{kv: s.kv, maxOps: s.cfg.MaxTxnOps, startRev: resp.Header.Revision,
		ids: map[string]int64{}, changed: make(chan struct{}, 1), stopped: make(chan struct{})}
	o.follower = statusFollower{w: w, clock: s.cfg.Clock, log: s.cfg.Logger, what: "unfinished tasks",
		retry: time.Second, stopOnReadError: true, read: o.resync, apply: o.follow}
	return o, nil
}

// Len returns how many tasks of the set are not known to be finished. Safe
// for concurrent use.
func (o *Outstanding) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ids)
}

// Add puts ids into the set before they are submitted.
func (o *Outstanding) Add(ids []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if _, ok := o.ids[id]; !ok {
			o.ids[id] = inFlight
		}
	}
}

// Created records that the submit of ids returned: they are in etcd (a
// task submitted ready as its spec until its first state, D-size6), or
// were, if Run already dropped them.
func (o *Outstanding) Created(ids []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if r, ok := o.ids[id]; ok && r == inFlight {
			o.ids[id] = 0
		}
	}
}

// Settle reads the states of ids (tasks that existed before their submit)
// and drops those that are finished or removed. Cancelling ctx abandons
// the reads.
func (o *Outstanding) Settle(ctx context.Context, ids []string) error {
	for i := 0; i < len(ids); i += o.maxOps {
		part := ids[i:min(i+o.maxOps, len(ids))]
		sts, _, err := readStatuses(ctx, o.kv, o.maxOps, part, 0)
		if err != nil {
			return err
		}
		o.mu.Lock()
		for j, ts := range sts {
			id := part[j]
			known, ok := o.ids[id]
			if !ok {
				continue
			}
			switch {
			case !ts.Found:
				if known != inFlight {
					delete(o.ids, id) // removed after its retention
				}
			case ts.ModRevision > known:
				o.apply(id, ts.Status, ts.ModRevision)
			}
		}
		o.mu.Unlock()
		o.signal()
	}
	return nil
}

// apply records a state of id read or watched at its mod revision. Called
// with mu held.
func (o *Outstanding) apply(id string, st Status, modRev int64) {
	if st.State.Finished() {
		delete(o.ids, id)
		return
	}
	o.ids[id] = modRev
}

func (o *Outstanding) signal() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// WaitBelow blocks until at most n tasks of the set are unfinished, ctx
// ends, or Run has stopped.
func (o *Outstanding) WaitBelow(ctx context.Context, n int) error {
	for {
		if o.Len() <= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.stopped:
			if o.Len() <= n {
				return nil
			}
			return o.runErr
		case <-o.changed:
		}
	}
}

// Run follows the states of the set until ctx ends; it returns ctx's
// error, or the error that stopped it (then WaitBelow returns it too). Run
// it once, in its own goroutine, owned by the caller of StartOutstanding.
func (o *Outstanding) Run(ctx context.Context) error {
	err := o.follower.run(ctx, o.startRev)
	o.mu.Lock()
	o.runErr = err
	o.mu.Unlock()
	close(o.stopped)
	return err
}

// follow applies the state changes of one watch response.
func (o *Outstanding) follow(changes []statusChange) {
	dropped := false
	o.mu.Lock()
	for _, c := range changes {
		known, ok := o.ids[c.ID]
		if !ok || c.ModRevision <= known {
			continue
		}
		switch {
		case c.Removed:
			delete(o.ids, c.ID)
		case c.Cur != nil:
			o.apply(c.ID, *c.Cur, c.ModRevision)
		default:
			o.ids[c.ID] = c.ModRevision
		}
		if _, still := o.ids[c.ID]; !still {
			dropped = true
		}
	}
	o.mu.Unlock()
	if dropped {
		o.signal()
	}
}

// resync reads the states of the whole set and returns the revision they
// were read at (the oldest of the reads).
func (o *Outstanding) resync(ctx context.Context) (int64, error) {
	o.mu.Lock()
	ids := make([]string, 0, len(o.ids))
	for id := range o.ids {
		ids = append(ids, id)
	}
	o.mu.Unlock()
	resp, err := o.kv.Get(ctx, prefixState, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	// Reads at or after resp's revision: watching from it again re-applies
	// what they saw, which the mod-revision compare ignores.
	return resp.Header.Revision, o.Settle(ctx, ids)
}
