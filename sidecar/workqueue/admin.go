package workqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/batonhq/baton/sidecar/audit"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// What an operator does to tasks and queues: cancel, retry, pause, resume
// (what it reads is in inspect.go). Every change is one transaction that compares the state's mod revision
// with the one read, so it never overwrites a move it did not see; a
// conflict is retried a few times with a fresh read. With Config.Audit,
// the transaction that changes something also writes the action's record
// (package audit); one that changes nothing writes none.

// ErrNotFound: no task with that id exists (it was never submitted, or it
// was removed after its retention period).
var ErrNotFound = errors.New("workqueue: no such task")

// StateError is an operation refused because of the task's state.
type StateError struct {
	ID    string
	State State
	Op    string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("task %s is %s; %s", e.ID, e.State, e.Op)
}

// CancelResult says what Cancel did.
type CancelResult struct {
	// State after the call: CANCELLED, or CLAIMED when the holder was asked.
	State State `json:"state"`
	// Requested: the task is claimed; its worker was asked to stop and
	// the task ends CANCELLED when the worker gives it up (Fail or
	// Release), or DONE if it completes anyway.
	Requested bool `json:"requested,omitempty"`
}

// Cancel cancels a task. A PENDING or FAILED task is CANCELLED at once. For
// a CLAIMED task it writes the q/cancel/<id> marker: the holding sidecar
// pushes the request to the worker's Attach stream, Heartbeat reports it,
// and the worker's Fail or Release (or the loss of its claim) ends the task
// as CANCELLED. A finished task is left alone; cancelling a CANCELLED task
// again succeeds.
func (s *Store) Cancel(ctx context.Context, id string) (CancelResult, error) {
	if err := ValidateID(id); err != nil {
		return CancelResult{}, &InvalidError{Field: "id", Err: err}
	}
	for range 5 {
		resp, err := s.kv.Txn(ctx).Then(clientv3.OpGet(stateKey(id)), clientv3.OpGet(claimKey(id), clientv3.WithKeysOnly()), clientv3.OpGet(taskKey(id))).Commit()
		if err != nil {
			return CancelResult{}, err
		}
		st, sameState, err := statusToChange(id, resp.Responses[0].GetResponseRange().Kvs, resp.Responses[2].GetResponseRange().Kvs)
		if err != nil {
			return CancelResult{}, err
		}
		now := s.cfg.Now()
		switch st.State {
		case StateCancelled:
			return CancelResult{State: StateCancelled}, nil
		case StateDone, StateDead:
			return CancelResult{}, &StateError{ID: id, State: st.State, Op: "only unfinished tasks can be cancelled"}
		case StatePending, StateFailed:
			ops := []clientv3.Op{}
			if st.Index != "" {
				ops = append(ops, clientv3.OpDelete(st.Index))
			}
			ops = append(ops, finishOps(id, released(st, StateCancelled, now), now)...)
			ops, err := s.audited(ctx, ops, audit.TaskCancel, id, "was "+string(st.State))
			if err != nil {
				return CancelResult{}, err
			}
			r, err := s.kv.Txn(ctx).If(sameState...).Then(ops...).Commit()
			if err != nil {
				return CancelResult{}, err
			}
			if r.Succeeded {
				return CancelResult{State: StateCancelled}, nil
			}
		case StateClaimed:
			ckvs := resp.Responses[1].GetResponseRange().Kvs
			if len(ckvs) == 0 {
				continue // the claim is being recovered; look again
			}
			token := ckvs[0].CreateRevision
			ops := []clientv3.Op{clientv3.OpPut(cancelKey(id), strconv.FormatInt(token, 10))}
			if st.Wait != "" {
				ops = append(ops, cancelNoticeOp(st.Wait, id, token))
			}
			ops, err := s.audited(ctx, ops, audit.TaskCancel, id, fmt.Sprintf("was CLAIMED (fencing token %d): its worker was asked to stop", token))
			if err != nil {
				return CancelResult{}, err
			}
			r, err := s.kv.Txn(ctx).If(ownsClaim(id, token)).Then(ops...).Commit()
			if err != nil {
				return CancelResult{}, err
			}
			if r.Succeeded {
				return CancelResult{State: StateClaimed, Requested: true}, nil
			}
		}
	}
	return CancelResult{}, fmt.Errorf("task %s: it kept changing while cancelling; try again", id)
}

// Retry puts a DEAD or CANCELLED task back into its queue as PENDING with
// all its attempts available again, at its original place. Retrying a task
// that is PENDING, CLAIMED or FAILED after a retry changed nothing is not
// an error only when it was retried already; any other state is refused
// with a StateError. It reports whether it changed anything.
func (s *Store) Retry(ctx context.Context, id string) (bool, error) {
	if err := ValidateID(id); err != nil {
		return false, &InvalidError{Field: "id", Err: err}
	}
	for range 5 {
		resp, err := s.kv.Txn(ctx).Then(clientv3.OpGet(stateKey(id)), clientv3.OpGet(taskKey(id), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return false, err
		}
		skvs := resp.Responses[0].GetResponseRange().Kvs
		if len(skvs) == 0 {
			if len(resp.Responses[1].GetResponseRange().Kvs) == 0 {
				return false, ErrNotFound
			}
			return false, nil // PENDING and never run (statuses.go)
		}
		st, err := decodeStatus(skvs[0].Value)
		if err != nil {
			return false, fmt.Errorf("task %s: bad status: %w", id, err)
		}
		switch st.State {
		case StateDead, StateCancelled:
		case StatePending:
			if st.Attempt == 0 {
				return false, nil // retried already (or never run)
			}
			fallthrough
		default:
			return false, &StateError{ID: id, State: st.State, Op: "only DEAD or CANCELLED tasks can be retried"}
		}
		gc := st.Index
		next := released(st, StatePending, s.cfg.Now())
		next.Attempt = 0
		next.Holder = ""
		next.CancelRequested = false
		next, ops := pendingOps(id, next)
		ops = append(ops, clientv3.OpDelete(resultKey(id)), clientv3.OpDelete(cancelKey(id)))
		if strings.HasPrefix(gc, prefixGC) {
			ops = append(ops, clientv3.OpDelete(gc))
		}
		ops, err = s.audited(ctx, ops, audit.TaskRetry, id, "was "+string(st.State))
		if err != nil {
			return false, err
		}
		r, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(stateKey(id)), "=", skvs[0].ModRevision)).Then(ops...).Commit()
		if err != nil {
			return false, err
		}
		if r.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("task %s: it kept changing while retrying; try again", id)
}

// Pause stops every sidecar handing out tasks of queue q. Claims in hand
// are answered as usual and Submit still accepts tasks. Pausing a paused
// queue changes nothing. It reports whether it changed anything.
func (s *Store) Pause(ctx context.Context, q string) (bool, error) {
	if err := ValidateQueue(q); err != nil {
		return false, &InvalidError{Field: "queue", Err: err}
	}
	ops, err := s.audited(ctx, []clientv3.Op{clientv3.OpPut(pauseKey(q), strconv.FormatInt(ms(s.cfg.Now()), 10))}, audit.QueuePause, q, "")
	if err != nil {
		return false, err
	}
	r, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(pauseKey(q)), "=", 0)).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return r.Succeeded, nil
}

// Resume lets queue q hand out tasks again. Resuming a queue that is not
// paused changes nothing. It reports whether it changed anything.
func (s *Store) Resume(ctx context.Context, q string) (bool, error) {
	if err := ValidateQueue(q); err != nil {
		return false, &InvalidError{Field: "queue", Err: err}
	}
	ops, err := s.audited(ctx, []clientv3.Op{clientv3.OpDelete(pauseKey(q))}, audit.QueueResume, q, "")
	if err != nil {
		return false, err
	}
	r, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(pauseKey(q)), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return r.Succeeded, nil
}

// statusToChange returns the status of task id read with its state and
// spec (stateKVs, specKVs) and the compare that holds while the status is
// unchanged. A task without a state is PENDING in the ready entry its spec
// names (statuses.go) as long as it has no state and that entry exists: its
// first claim deletes the entry and writes the state together.
func statusToChange(id string, stateKVs, specKVs []*mvccpb.KeyValue) (Status, []clientv3.Cmp, error) {
	if len(stateKVs) == 1 {
		st, err := decodeStatus(stateKVs[0].Value)
		if err != nil {
			return st, nil, fmt.Errorf("task %s: bad status: %w", id, err)
		}
		return st, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(stateKey(id)), "=", stateKVs[0].ModRevision)}, nil
	}
	if len(specKVs) == 0 {
		return Status{}, nil, ErrNotFound
	}
	sp, err := decodeSpec(specKVs[0].Value)
	if err != nil {
		return Status{}, nil, fmt.Errorf("task %s: bad spec: %w", id, err)
	}
	st := pendingStatus(id, sp)
	return st, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(stateKey(id)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(st.Index), ">", 0),
	}, nil
}
