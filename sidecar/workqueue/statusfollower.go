package workqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// statusFollower reads task statuses at one revision, then follows them
// with one watch from the next revision and hands each change to its
// consumer in revision order: the one way the package keeps statuses in
// memory (the page's counts, Tally; bounded feeding's set, Outstanding).
//
// The rule after the watch ends, in one place: a watch compacted (this
// process fell behind by more than etcd's compaction interval) is followed
// at once by a new read and a watch from that read's revision; a watch
// that failed otherwise (the leader lost, etcd away, the watcher closed)
// is read again after retry on the clock, since a read at once would most
// likely fail too. A failed read is retried after retry, or ends run when
// stopOnReadError is set (a command would rather fail than wait). The
// watch delivers only changes after the revision read returns; a consumer
// whose read may see later ones (Outstanding reads at or after it) applies
// a change only when its mod revision is newer than what it holds, so a
// change seen by both counts once.
//
// run is the follower's only goroutine; read and apply are called from it,
// never at the same time.
type statusFollower struct {
	w     clientv3.Watcher
	clock clockwork.Clock
	log   *slog.Logger
	what  string // the consumer, for logs: "task counts"
	// specs makes the watch cover task/ as well as state/, with previous
	// values: a spec's creation (a task submitted ready, which has no
	// state until it first moves) is a change to PENDING, and a task's
	// first state a change from it. Without it only states are watched,
	// and Prev is never set.
	specs bool
	retry time.Duration
	// stopOnReadError makes a failed read end run with its error.
	stopOnReadError bool
	// read reads the statuses the consumer keeps and returns the revision
	// to watch after: every change after it must reach apply.
	read func(ctx context.Context) (int64, error)
	// apply receives the changes of one watch response, in order.
	apply func([]statusChange)
}

// statusChange is one task's status moving, as the watch saw it at
// ModRevision.
type statusChange struct {
	ID          string
	ModRevision int64
	// Prev is the status before (nil: none, or not watched). Cur is the
	// status after; nil when Removed (the task is gone after its
	// retention) or when the value could not be read.
	Prev, Cur *Status
	Removed   bool
}

// errWatchClosed reports a watch channel closed without an error.
var errWatchClosed = errors.New("watch closed")

// run follows the statuses until ctx ends, starting from rev (0: read
// first), and returns ctx's error or, with stopOnReadError, the read's.
func (f *statusFollower) run(ctx context.Context, rev int64) error {
	var werr error // why the last watch ended
	for {
		if rev == 0 {
			r, err := f.read(ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				if f.stopOnReadError {
					if werr != nil {
						return fmt.Errorf("reading the statuses again after the watch ended (%v): %w", werr, err)
					}
					return fmt.Errorf("reading the statuses: %w", err)
				}
				f.log.Warn(f.what+": reading task statuses failed; retrying", "err", err, "retry_in", f.retry)
				if !f.wait(ctx) {
					return ctx.Err()
				}
				continue
			}
			rev = r
		}
		werr = f.watch(ctx, rev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rev = 0
		if errors.Is(werr, rpctypes.ErrCompacted) {
			f.log.Info(f.what + ": the watch fell behind a compaction; reading again")
			continue
		}
		f.log.Warn(f.what+": the watch of task statuses failed; reading again", "err", werr, "retry_in", f.retry)
		if !f.wait(ctx) {
			return ctx.Err()
		}
	}
}

// wait waits retry on the clock; false when ctx ended first.
func (f *statusFollower) wait(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-f.clock.After(f.retry):
		return true
	}
}

// watch applies the changes after rev until the watch ends, and returns
// why it ended.
func (f *statusFollower) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixState)), clientv3.WithRev(rev + 1)}
	if f.specs {
		// Nothing sorts between state/ and task/, so one watch covers
		// both, and the events of a transaction arrive together and in
		// order.
		opts = []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixTask)), clientv3.WithRev(rev + 1), clientv3.WithPrevKV()}
	}
	var changes []statusChange
	for resp := range f.w.Watch(wctx, prefixState, opts...) {
		if err := resp.Err(); err != nil {
			return err
		}
		changes = changes[:0]
		for _, ev := range resp.Events {
			if c, ok := f.change(ev); ok {
				changes = append(changes, c)
			}
		}
		if len(changes) > 0 {
			f.apply(changes)
		}
	}
	return errWatchClosed
}

// change turns one event into a status change; false for an event that
// changes no status.
func (f *statusFollower) change(ev *clientv3.Event) (statusChange, bool) {
	key := string(ev.Kv.Key)
	if id, ok := strings.CutPrefix(key, prefixTask); ok {
		// A spec is written once, by the submit; a task held back by
		// not_before gets its state in the same transaction.
		if !f.specs || ev.Type != mvccpb.PUT || ev.PrevKv != nil {
			return statusChange{}, false
		}
		sp, err := decodeSpec(ev.Kv.Value)
		if err != nil || sp.NotBeforeMS != 0 {
			return statusChange{}, false
		}
		st := pendingStatus(id, sp)
		return statusChange{ID: id, ModRevision: ev.Kv.ModRevision, Cur: &st}, true
	}
	id, ok := strings.CutPrefix(key, prefixState)
	if !ok {
		return statusChange{}, false
	}
	c := statusChange{ID: id, ModRevision: ev.Kv.ModRevision, Removed: ev.Type == mvccpb.DELETE}
	if ev.PrevKv != nil {
		if st, err := decodeStatus(ev.PrevKv.Value); err == nil {
			c.Prev = &st
		}
	}
	if ev.Type == mvccpb.PUT {
		if st, err := decodeStatus(ev.Kv.Value); err == nil {
			c.Cur = &st
			if f.specs && ev.PrevKv == nil && st.State != StatePending {
				// The first move of a task submitted ready.
				c.Prev = &Status{State: StatePending, Queue: st.Queue, Batch: st.Batch}
			}
		}
	}
	return c, true
}
