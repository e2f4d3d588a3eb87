package workqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// deliver hands the assignment of task id (token) to the Next call waiting
// on seq, or gives it back when none waits for it.
func (d *Dispatcher) deliver(seq uint64, id string, token int64) {
	d.mu.Lock()
	if d.taken[token] {
		d.mu.Unlock()
		return // seen before a resync of the watch
	}
	d.taken[token] = true
	lw := d.waits[seq]
	if lw != nil && lw.poll {
		lw.polled = token
		d.mu.Unlock()
		return
	}
	if lw != nil && lw.id == "" {
		lw.id = id
		lw.ch <- token
		d.mu.Unlock()
		return
	}
	delete(d.taken, token)
	d.mu.Unlock()
	d.giveBack(id, token)
}

// giveBack releases, without using an attempt, a claim that was assigned
// to this sidecar but reached no worker. It runs in the background and
// tries again every abandonRetry while etcd does not answer, until the
// claim is released, found gone, lost with this sidecar's lease, or the
// dispatcher stops.
func (d *Dispatcher) giveBack(id string, token int64) {
	go d.tracked(func() {
		for !d.tryGiveBack(id, token) {
			select {
			case <-d.cfg.Clock.After(abandonRetry):
			case <-d.stopCh:
				return
			}
		}
	})
}

// tryGiveBack is one attempt of giveBack; it reports whether it is over.
func (d *Dispatcher) tryGiveBack(id string, token int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	resp, err := d.kv.Get(ctx, claimKey(id))
	if err != nil {
		d.cfg.Logger.Warn("giving back an assignment that reached no worker failed; retrying", "task", id, "err", err)
		return false
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != token {
		return true // ended meanwhile
	}
	ls, _, err := d.lease.Session()
	if err != nil {
		return false // no lease just now: look again
	}
	if int64(ls.Lease()) != resp.Kvs[0].Lease {
		return true // bound to a lease this sidecar lost: it goes with that lease
	}
	st, err := decodeStatus(resp.Kvs[0].Value)
	if err != nil {
		return true
	}
	state, err := d.store.release(ctx, id, token, st)
	switch {
	case err == nil:
		d.ended(st.Queue, ReasonUnknownOutcome, state)
		d.cfg.Logger.Info("assignment that reached no worker given back", "task", id)
		return true
	case errors.Is(err, ErrClaimLost):
		return true
	}
	d.cfg.Logger.Warn("giving back an assignment that reached no worker failed; retrying", "task", id, "err", err)
	return false
}

// take reads the task assigned to the Next call on seq and holds its
// claim. It returns (nil, nil) when the claim ended before it was read.
func (d *Dispatcher) take(ctx context.Context, seq uint64, id string, token int64, sess *coord.Session, start time.Time) (*Claimed, error) {
	d.mu.Lock()
	delete(d.waits, seq)
	d.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	c, err := d.store.readClaim(rctx, id, token)
	cancel()
	switch {
	case c != nil && err != nil:
		d.discard(ctx, c, err)
		return nil, nil
	case c != nil && ctx.Err() == nil:
		if err := d.trusted(ctx, c); err != nil {
			d.untake(token)
			d.giveBack(id, token)
			return nil, err
		}
		return d.claimed(ctx, c, sess, claimTrace{start: start})
	}
	d.untake(token)
	switch {
	case c != nil: // the caller left while the claim was read
		d.giveBack(id, token)
		return nil, ctx.Err()
	case err != nil && !errors.Is(err, ErrClaimLost):
		d.giveBack(id, token)
		return nil, fmt.Errorf("claim: %w", err)
	}
	return nil, nil
}

// trusted checks, before a claim is handed to a worker, that the lease it
// is bound to is this sidecar's and that etcd confirmed it within its trust
// window (coord.Trust). Otherwise the sidecar may have been paused or cut
// off since the claim was made, for long enough that the lease expired and
// the task went to another worker: the claim must not be handed out. The
// error wraps coord.ErrNoLease (UNAVAILABLE: the worker asks again).
func (d *Dispatcher) trusted(ctx context.Context, c *Claimed) error {
	tr := d.lease.Trust(clientv3.LeaseID(c.Status.Lease))
	if tr == nil {
		d.cfg.Logger.WarnContext(ctx, "claim bound to a lease this sidecar no longer holds; giving it back", "task", c.ID, "token", c.Token)
		return fmt.Errorf("task %s was claimed under a lease this sidecar no longer holds: %w", c.ID, coord.ErrNoLease)
	}
	if tr.Trusted() {
		return nil
	}
	age := tr.Age()
	d.cfg.Logger.WarnContext(ctx, "claim read past its lease's trust window; giving it back", "task", c.ID, "token", c.Token,
		"confirmed_ago", age, "trust_window", tr.Window())
	return fmt.Errorf("task %s was claimed under a lease etcd last confirmed %v ago, past its trust window of %v: %w", c.ID, age, tr.Window(), coord.ErrNoLease)
}

// untake forgets that the assignment of token was handed to a Next call
// (it was not taken after all).
func (d *Dispatcher) untake(token int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.taken, token)
}

// discard ends a claim whose task can never run (its spec is unreadable):
// the task is DEAD at once, with the reason.
func (d *Dispatcher) discard(ctx context.Context, c *Claimed, err error) {
	d.untake(c.Token)
	d.cfg.Logger.ErrorContext(ctx, "claimed task is broken; marking it dead", "task", c.ID, "err", err)
	state, _, ferr := d.store.fail(ctx, c.ID, c.Token, c.Status, err.Error(), true, 0)
	if ferr == nil {
		d.ended(c.Status.Queue, ReasonError, state)
	}
}

// claimed records a claim made for a Next call and returns it.
func (d *Dispatcher) claimed(ctx context.Context, c *Claimed, sess *coord.Session, cl claimTrace) (*Claimed, error) {
	c.secret = newClaimSecret()
	d.mu.Lock()
	d.stats.Claims++
	first := false
	if c.Status.Affinity != "" {
		sessID := ""
		if sess != nil {
			sessID = sess.ID
		}
		_, had := d.affinity[sessID]
		first = !had && sess != nil
		d.affinity[sessID] = c.Status.Affinity
	}
	d.mu.Unlock()
	if first {
		id := sess.ID
		if _, ok := sess.OnClose(func() { d.forgetSession(id) }); !ok {
			d.forgetSession(id) // closed already
		}
	}
	d.cfg.Observer.TaskClaimed(c.Status.Queue, max(d.cfg.Clock.Since(time.UnixMilli(c.Status.ReadyMS)), 0))
	sc := d.traceClaim(ctx, c, &cl)
	return c, d.hold(c, sess, sc)
}
