package workqueue

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// How readers find a task's status. A task submitted ready has no
// state/<id> until it first leaves its ready entry (its first claim, or a
// cancel): the claim transaction that deletes the ready entry creates
// state/<id>, and nothing else deletes a ready entry of a task without a
// state. So at any one revision, a task with a spec and no state is
// PENDING at attempt 0 in the ready entry its spec names (pendingStatus),
// and a task with neither is gone (removed after its retention).

// taskStatus is a task's status as read at one revision.
type taskStatus struct {
	Status Status
	// ModRevision is the mod revision of what the status was read from:
	// state/<id>, or task/<id> for a task that has no state yet.
	ModRevision int64
	// Found is false when the task has neither state nor spec.
	Found bool
}

// readStatuses reads the statuses of ids at one revision, rev (0: the
// revision of the first read, which it returns), in transactions of at
// most maxOps reads: the states first, then the specs of the tasks
// without one.
func readStatuses(ctx context.Context, kv clientv3.KV, maxOps int, ids []string, rev int64) ([]taskStatus, int64, error) {
	maxOps = max(maxOps, 1)
	out := make([]taskStatus, len(ids))
	var missing []int
	for i := 0; i < len(ids); i += maxOps {
		part := ids[i:min(i+maxOps, len(ids))]
		ops := make([]clientv3.Op, len(part))
		for j, id := range part {
			ops[j] = clientv3.OpGet(stateKey(id), revOpt(rev)...)
		}
		resp, err := kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for j, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				missing = append(missing, i+j)
				continue
			}
			st, err := decodeStatus(kvs[0].Value)
			if err != nil {
				continue // unreadable: reported as gone
			}
			out[i+j] = taskStatus{Status: st, ModRevision: kvs[0].ModRevision, Found: true}
		}
	}
	for i := 0; i < len(missing); i += maxOps {
		part := missing[i:min(i+maxOps, len(missing))]
		ops := make([]clientv3.Op, len(part))
		for j, k := range part {
			ops[j] = clientv3.OpGet(taskKey(ids[k]), clientv3.WithRev(rev))
		}
		resp, err := kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, 0, err
		}
		for j, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue
			}
			sp, err := decodeSpec(kvs[0].Value)
			if err != nil {
				continue
			}
			k := part[j]
			out[k] = taskStatus{Status: pendingStatus(ids[k], sp), ModRevision: kvs[0].ModRevision, Found: true}
		}
	}
	return out, rev, nil
}

func revOpt(rev int64) []clientv3.OpOption {
	if rev == 0 {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithRev(rev)}
}
