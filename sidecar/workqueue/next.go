package workqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CheckQueues reports what is wrong with the queues of a Next call (an
// *InvalidError naming queues or queues[i]): 1 to MaxQueuesPerNext valid
// queue names.
func CheckQueues(queues []string) error {
	if len(queues) == 0 {
		return invalid("queues", "at least one queue is required")
	}
	if len(queues) > MaxQueuesPerNext {
		return invalid("queues", "%d queues, over the limit of %d", len(queues), MaxQueuesPerNext)
	}
	for i, q := range queues {
		if err := ValidateQueue(q); err != nil {
			return &InvalidError{Field: fmt.Sprintf("queues[%d]", i), Err: err}
		}
	}
	return nil
}

// Next claims a task from the first of queues that has one, waiting up to
// wait for one to arrive. It returns (nil, nil) when the wait ends without
// a task. With a session, the claim is given back with its attempt counted
// when the session closes. Cancelling ctx abandons the wait.
//
// With wait 0 Next claims from the head of the ready index itself (one
// read and one transaction: see poll.go). Otherwise it registers a wait
// key and the scheduler assigns it a task; no other sidecar sees either.
//
// A successful claim is traced as a span (SpanClaim) in the task's trace,
// child of the context stored at submit, linked to ctx's span; the
// returned Claimed's Traceparent is that span's, so the worker's span
// becomes its child.
func (d *Dispatcher) Next(ctx context.Context, queues []string, wait time.Duration, sess *coord.Session) (*Claimed, error) {
	if err := CheckQueues(queues); err != nil {
		return nil, err
	}
	if d.isDraining() {
		return nil, ErrDraining
	}
	if wait <= 0 {
		return d.poll(ctx, queues, sess)
	}
	timer := d.cfg.Clock.NewTimer(wait)
	defer timer.Stop()
	var sessDone <-chan struct{}
	sessID := ""
	if sess != nil {
		sessDone, sessID = sess.Done(), sess.ID
	}
	start := d.cfg.Now()
	deadline := start.Add(wait)
	backoff := 50 * time.Millisecond // between failed registrations
	var (
		lw       *localWait // the registration in progress, nil for none
		seq      uint64
		key      string
		keyLease clientv3.LeaseID
	)
	for {
		ls, leaseChanged, err := d.lease.Session()
		if err != nil {
			select {
			case <-leaseChanged:
				continue
			case <-timer.Chan():
				if lw != nil {
					d.leaveWait(seq)
				}
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-d.drainCh:
				return nil, ErrDraining
			}
		}
		if lw == nil || keyLease != ls.Lease() {
			// One key per registration: a put retried after a failure
			// that etcd may have applied writes the same key again.
			if lw != nil {
				d.leaveWait(seq)
			}
			seq, lw = d.addWait(false)
			key, keyLease = waitKey(ls.Lease(), seq), ls.Lease()
		}
		rec := waitRecord{Queues: queues, Session: sessID, Holder: d.worker, Labels: d.labels, Affinity: d.lastAffinity(sessID)}
		pctx, cancel := context.WithTimeout(ctx, max(min(d.cfg.Clock.Until(deadline), claimTimeout), time.Second))
		rev, err := d.store.putWait(pctx, key, rec, ls.Lease())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				d.leaveWait(seq)
				return nil, ctx.Err()
			}
			// etcd may be coming back: try again while the caller's wait
			// lasts. A lease etcd no longer knows is replaced by the
			// lease keeper: wait for that rather than retry on it.
			if backoff == 50*time.Millisecond {
				d.cfg.Logger.Warn("registering a waiting Next failed; retrying while the wait lasts", "err", err)
			}
			retry := d.cfg.Clock.After(backoff)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				retry = nil
			}
			select {
			case <-retry:
				backoff = min(2*backoff, time.Second)
				continue
			case <-ls.Done():
				continue
			case <-timer.Chan():
				d.leaveWait(seq) // an assignment to a put that etcd applied goes back
				return nil, fmt.Errorf("waiting for a task: %w", err)
			case <-ctx.Done():
				d.leaveWait(seq)
				return nil, ctx.Err()
			case <-d.drainCh:
				d.leaveWait(seq)
				return nil, ErrDraining
			}
		}
		backoff = 50 * time.Millisecond
		var gone string // why the caller stops waiting, "" while it waits
		select {
		case token := <-lw.ch:
			id := lw.id
			lw = nil
			if c, err := d.take(ctx, seq, id, token, sess, start); c != nil || err != nil {
				return c, err
			}
			continue // the claim was lost before it could be read; wait again
		case <-ls.Done():
			d.leaveWait(seq) // the wait key went with the lease
			lw = nil
			continue
		case <-timer.Chan():
			gone = "timeout"
		case <-ctx.Done():
			gone = "cancelled"
		case <-sessDone:
			gone = "session"
		case <-d.drainCh:
			gone = "draining"
		}
		// Withdraw the wait key unless a task was assigned meanwhile.
		dctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
		dropped, err := d.store.dropWait(dctx, key, rev)
		cancel()
		if err == nil && !dropped && gone == "timeout" {
			// Assigned (or gone with the lease) just as the wait ended:
			// take the task if the assignment arrives.
			select {
			case token := <-lw.ch:
				if c, err := d.take(ctx, seq, lw.id, token, sess, start); c != nil || err != nil {
					return c, err
				}
			case <-ls.Done():
			case <-d.cfg.Clock.After(claimTimeout):
			case <-ctx.Done():
			}
		}
		d.leaveWait(seq)
		switch gone {
		case "timeout":
			return nil, nil
		case "cancelled":
			return nil, ctx.Err()
		case "session":
			return nil, coord.ErrUnknownSession
		default:
			return nil, ErrDraining
		}
	}
}

func (d *Dispatcher) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

// addWait records a new waiting Next call (or, with poll, the wait key of
// a claim Next makes itself) and returns its sequence.
func (d *Dispatcher) addWait(poll bool) (uint64, *localWait) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	lw := &localWait{ch: make(chan int64, 1), poll: poll}
	d.waits[d.seq] = lw
	return d.seq, lw
}

// leaveWait forgets a Next call's wait. An assignment it was sent and did
// not take goes back to the queue.
func (d *Dispatcher) leaveWait(seq uint64) {
	d.mu.Lock()
	lw := d.waits[seq]
	delete(d.waits, seq)
	var token int64
	var id string
	if lw != nil && lw.id != "" {
		select {
		case token = <-lw.ch:
			id = lw.id
			delete(d.taken, token)
		default:
		}
	}
	d.mu.Unlock()
	if id != "" {
		d.giveBack(id, token)
	}
}
