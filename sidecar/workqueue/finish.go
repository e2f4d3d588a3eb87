package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ownsClaim compares the claim key's create revision with the token.
func ownsClaim(id string, token int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(claimKey(id)), "=", token)
}

// released clears the fields that only a live claim has.
func released(st Status, state State, now time.Time) Status {
	st.State = state
	st.Session, st.Lease, st.DeadlineMS, st.ReadyMS = "", 0, 0, 0
	st.Index = ""
	st.UpdatedMS = ms(now)
	return st
}

func (s *Store) commitOwned(ctx context.Context, id string, token int64, ops ...clientv3.Op) error {
	resp, err := s.kv.Txn(ctx).If(ownsClaim(id, token)).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrClaimLost
	}
	return nil
}

// finishOps are the writes that put a task into an end state.
// The finished status names its retention entry (Index), so that an
// operator's retry can remove it.
func finishOps(id string, st Status, now time.Time) []clientv3.Op {
	st.Index = gcKey(now, id)
	wait := waitOps(&st)
	return append(wait,
		clientv3.OpDelete(claimKey(id)),
		clientv3.OpDelete(runKey(id)),
		clientv3.OpDelete(cancelKey(id)),
		clientv3.OpPut(stateKey(id), st.encode()),
		clientv3.OpPut(st.Index, st.Batch),
	)
}

// pendingOps are the writes that put a task back into its ready index.
func pendingOps(id string, st Status) (Status, []clientv3.Op) {
	st.Index = readyKey(st.Queue, st.Priority, st.Order, id)
	wait := waitOps(&st)
	return st, append(wait,
		clientv3.OpPut(stateKey(id), st.encode()),
		clientv3.OpPut(st.Index, encodeReady(st)),
	)
}

// Complete finishes a claimed task as DONE with its result. It returns
// ErrClaimLost, and changes nothing, unless the claim with this token is
// live.
func (s *Store) Complete(ctx context.Context, id string, token int64, st Status, result json.RawMessage) error {
	if len(result) == 0 {
		result = json.RawMessage("{}")
	}
	if len(result) > s.cfg.ResultLimit {
		return invalid("result", "is %d bytes, over the limit of %d: write the output to a file or object storage and return its path or URI in the result", len(result), s.cfg.ResultLimit)
	}
	now := s.cfg.Now()
	ops := finishOps(id, released(st, StateDone, now), now)
	ops = append(ops, clientv3.OpPut(resultKey(id), string(result)))
	return s.commitOwned(ctx, id, token, ops...)
}

// Backoff returns the delay before retrying after the given attempt:
// BackoffBase*2^(attempt-1), at most BackoffMax, with the upper half
// jittered.
func (s *Store) Backoff(attempt int32) time.Duration {
	d := s.cfg.BackoffBase
	for i := int32(1); i < attempt && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	half := d / 2
	return half + rand.N(half+1)
}

// Fail records a failed attempt. Unless the failure is permanent or the
// task has used its attempts, the task waits in the delay index for
// retryAfter (when positive) or the backoff and then becomes PENDING again;
// otherwise it is DEAD. The error is kept in either case.
func (s *Store) Fail(ctx context.Context, id string, token int64, st Status, msg string, permanent bool, retryAfter time.Duration) (willRetry bool, retryAt time.Time, err error) {
	state, retryAt, err := s.fail(ctx, id, token, st, msg, permanent, retryAfter)
	return state == StateFailed, retryAt, err
}

// fail is Fail; it returns the state the task is left in: FAILED (waiting
// for a retry at retryAt), DEAD or CANCELLED.
func (s *Store) fail(ctx context.Context, id string, token int64, st Status, msg string, permanent bool, retryAfter time.Duration) (State, time.Time, error) {
	now := s.cfg.Now()
	errOp := clientv3.OpPut(errorKey(id), ErrorRecord{Attempt: st.Attempt, Error: truncate(msg, 8<<10), Permanent: permanent, AtMS: ms(now)}.encode())
	cancelled := append(finishOps(id, released(st, StateCancelled, now), now), errOp)
	if st.CancelRequested {
		return StateCancelled, time.Time{}, s.commitOwned(ctx, id, token, cancelled...)
	}
	if permanent || st.Attempt >= st.MaxAttempts {
		ops := append(finishOps(id, released(st, StateDead, now), now), errOp)
		err := s.commitUnlessCancelled(ctx, id, token, ops, cancelled)
		if errors.Is(err, errWasCancelled) {
			return StateCancelled, time.Time{}, nil
		}
		return StateDead, time.Time{}, err
	}
	if retryAfter <= 0 {
		retryAfter = s.Backoff(st.Attempt)
	}
	retryAt := now.Add(retryAfter)
	next := released(st, StateFailed, now)
	next.Index = delayKey(retryAt, id)
	wait := waitOps(&next)
	enc := next.encode()
	err := s.commitUnlessCancelled(ctx, id, token, append(wait,
		clientv3.OpDelete(claimKey(id)),
		clientv3.OpDelete(runKey(id)),
		clientv3.OpPut(stateKey(id), enc),
		clientv3.OpPut(next.Index, enc),
		errOp,
	), cancelled)
	if errors.Is(err, errWasCancelled) {
		return StateCancelled, time.Time{}, nil
	}
	return StateFailed, retryAt, err
}

// Release gives a claimed task back to the head of its queue without using
// an attempt.
// A task whose cancelling was requested is CANCELLED instead.
func (s *Store) Release(ctx context.Context, id string, token int64, st Status) error {
	_, err := s.release(ctx, id, token, st)
	return err
}

// release is Release; it returns the state the task is left in: PENDING
// or CANCELLED.
func (s *Store) release(ctx context.Context, id string, token int64, st Status) (State, error) {
	now := s.cfg.Now()
	cancelled := finishOps(id, released(st, StateCancelled, now), now)
	if st.CancelRequested {
		return StateCancelled, s.commitOwned(ctx, id, token, cancelled...)
	}
	next := released(st, StatePending, now)
	next.Attempt--
	next, ops := pendingOps(id, next)
	ops = append(ops, clientv3.OpDelete(claimKey(id)), clientv3.OpDelete(runKey(id)))
	err := s.commitUnlessCancelled(ctx, id, token, ops, cancelled)
	if errors.Is(err, errWasCancelled) {
		return StateCancelled, nil
	}
	return StatePending, err
}

// errWasCancelled reports that commitUnlessCancelled took the cancelled
// branch.
var errWasCancelled = errors.New("workqueue: cancelled")

// commitUnlessCancelled applies ops if the claim with token is live and no
// cancel was requested for it, or cancelled if one was, in one
// transaction; it returns errWasCancelled in the second case.
func (s *Store) commitUnlessCancelled(ctx context.Context, id string, token int64, ops, cancelled []clientv3.Op) error {
	resp, err := s.kv.Txn(ctx).If(ownsClaim(id, token)).Then(
		clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(cancelKey(id)), "=", 0)}, ops, cancelled),
	).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrClaimLost
	}
	if !resp.Responses[0].GetResponseTxn().Succeeded {
		return errWasCancelled
	}
	return nil
}

// Heartbeat moves the claim's deadline to now plus the task's timeout and
// returns the updated status, with CancelRequested set when an operator
// asked to cancel the task (a q/cancel/<id> marker exists).
func (s *Store) Heartbeat(ctx context.Context, id string, token int64, st Status) (Status, error) {
	now := s.cfg.Now()
	st.DeadlineMS = ms(now.Add(st.Timeout()))
	st.UpdatedMS = ms(now)
	resp, err := s.kv.Txn(ctx).If(ownsClaim(id, token)).
		Then(clientv3.OpGet(cancelKey(id)), clientv3.OpPut(claimKey(id), st.encode(), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return st, err
	}
	if !resp.Succeeded {
		return st, ErrClaimLost
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		st.CancelRequested = true
	}
	return st, nil
}

// lostOps are the writes for a claim that ended without an answer from its
// worker: the attempt counts, and the task is PENDING again at its old
// place in the queue, or DEAD when it has used its attempts.
func lostOps(id string, st Status, reason string, now time.Time) []clientv3.Op {
	errOp := clientv3.OpPut(errorKey(id), ErrorRecord{Attempt: st.Attempt, Error: reason, AtMS: ms(now)}.encode())
	if st.CancelRequested {
		return append(finishOps(id, released(st, StateCancelled, now), now), errOp)
	}
	if st.Attempt >= st.MaxAttempts {
		return append(finishOps(id, released(st, StateDead, now), now), errOp)
	}
	_, ops := pendingOps(id, released(st, StatePending, now))
	return append(ops, clientv3.OpDelete(claimKey(id)), clientv3.OpDelete(runKey(id)), clientv3.OpDelete(cancelKey(id)), errOp)
}

// lostState returns the state that the writes of lostOrCancelled(st), whose
// transaction answered resps, left the task in.
func lostState(resps []*etcdserverpb.ResponseOp, st Status) State {
	if !st.CancelRequested && len(resps) > 0 {
		if t := resps[0].GetResponseTxn(); t != nil && !t.Succeeded {
			return StateCancelled
		}
	}
	switch {
	case st.CancelRequested:
		return StateCancelled
	case st.Attempt >= st.MaxAttempts:
		return StateDead
	}
	return StatePending
}

// lostOrCancelled is lostOps, except that the task ends CANCELLED when an
// operator asked to cancel it, whether or not st knows of it yet: a nested
// transaction checks the q/cancel/<id> marker.
func lostOrCancelled(id string, st Status, reason string, now time.Time) []clientv3.Op {
	if st.CancelRequested {
		return lostOps(id, st, reason, now)
	}
	cancelled := st
	cancelled.CancelRequested = true
	return []clientv3.Op{clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(cancelKey(id)), "=", 0)},
		lostOps(id, st, reason, now),
		lostOps(id, cancelled, reason, now),
	)}
}

// Abandon ends a live claim that its worker will not answer (the worker's
// session closed, or the deadline passed): the task returns to the queue
// with the attempt counted. modRev, when not 0, must also match the claim
// key's mod revision (so a heartbeat in between wins).
func (s *Store) Abandon(ctx context.Context, id string, token, modRev int64, st Status, reason string) error {
	_, err := s.abandon(ctx, id, token, modRev, st, reason)
	return err
}

// abandon is Abandon; it returns the state the task is left in: PENDING,
// DEAD (that was its last attempt) or CANCELLED.
func (s *Store) abandon(ctx context.Context, id string, token, modRev int64, st Status, reason string) (State, error) {
	cmps := []clientv3.Cmp{ownsClaim(id, token)}
	if modRev != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(claimKey(id)), "=", modRev))
	}
	resp, err := s.kv.Txn(ctx).If(cmps...).Then(lostOrCancelled(id, st, reason, s.cfg.Now())...).Commit()
	if err != nil {
		return "", err
	}
	if !resp.Succeeded {
		return "", ErrClaimLost
	}
	return lostState(resp.Responses, st), nil
}

// recovered is what recoverOrphan did.
type recovered struct {
	ok          bool   // this call recovered the task
	state       State  // the state it left the task in
	traceparent string // the task's stored trace context
}

// recoverOrphan requeues a task whose claim key is gone (its lease expired)
// while its status still names that claim: the status's mod revision is the
// claim's token, since the claim transaction wrote both.
func (s *Store) recoverOrphan(ctx context.Context, id string, token int64, st Status, reason string) (recovered, error) {
	ops := append(lostOrCancelled(id, st, reason, s.cfg.Now()), clientv3.OpGet(taskKey(id)))
	resp, err := s.kv.Txn(ctx).
		If(
			clientv3.Compare(clientv3.ModRevision(stateKey(id)), "=", token),
			clientv3.Compare(clientv3.CreateRevision(claimKey(id)), "=", 0),
		).
		Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		return recovered{}, err
	}
	r := recovered{ok: true, state: lostState(resp.Responses, st)}
	if kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().GetKvs(); len(kvs) == 1 {
		if sp, err := decodeSpec(kvs[0].Value); err == nil {
			r.traceparent = sp.Traceparent
		}
	}
	return r, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(truncated)"
}
