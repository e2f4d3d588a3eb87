package namedlock

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// mutex is one waiter's place in the line of a lock. It is etcd's
// concurrency.Mutex, with the same algorithm and the same keys (so a Go
// program holding a concurrency.Mutex on <namespace>/locks/<name> excludes
// Baton's workers and is excluded by them), and one change: a waiter
// watches its predecessor from the revision after its read instead of from
// the read's own revision. etcd serves a watch that starts in the past from
// its "unsynced" group, which it catches up only every 100ms, so with
// concurrency.Mutex a waiter that queued shortly before the release learns
// of it up to 100ms late (measured: ~95ms per handoff); starting at the next
// revision puts the watch in the synced group at once and misses nothing,
// since nothing can change between the read and that revision.
type mutex struct {
	cli   *clientv3.Client
	lease clientv3.LeaseID
	pfx   string // locks/<name>/
	key   string // pfx + lease in hex
	rev   int64  // the key's create revision: the fencing token once held
}

func newMutex(cli *clientv3.Client, lease clientv3.LeaseID, name string) *mutex {
	return &mutex{cli: cli, lease: lease, pfx: lockPrefix(name) + "/", key: waiterKey(name, lease)}
}

// enqueue puts the waiter's key (bound to the lease) unless it exists and
// reports whether it is first in line.
func (m *mutex) enqueue(ctx context.Context) (bool, error) {
	getOwner := clientv3.OpGet(m.pfx, clientv3.WithFirstCreate()...)
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, "", clientv3.WithLease(m.lease)), getOwner).
		Else(clientv3.OpGet(m.key), getOwner).
		Commit()
	if err != nil {
		return false, err
	}
	m.rev = resp.Header.Revision
	if !resp.Succeeded {
		m.rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	owner := resp.Responses[1].GetResponseRange().Kvs
	return len(owner) == 0 || owner[0].CreateRevision == m.rev, nil
}

// lock waits until every waiter queued before this one is gone. It returns
// ErrLockLeaseLost when the waiter's own key vanished meanwhile (its lease
// expired). On an error the caller must remove the key (remove).
func (m *mutex) lock(ctx context.Context) error {
	first, err := m.enqueue(ctx)
	if err != nil || first {
		return err
	}
	// Wait for the deletion of the last key before ours, then look again:
	// each waiter watches one key, so a release wakes one waiter.
	for {
		resp, err := m.cli.Get(ctx, m.pfx, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(m.rev-1))...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			break
		}
		if err := m.waitDelete(ctx, string(resp.Kvs[0].Key), resp.Header.Revision+1); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			return err
		} // compacted: read the line again
	}
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != m.rev {
		return ErrLockLeaseLost
	}
	return nil
}

func (m *mutex) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var wr clientv3.WatchResponse
	for wr = range m.cli.Watch(wctx, key, clientv3.WithRev(rev), clientv3.WithFilterPut()) {
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := wr.Err(); err != nil {
		return err
	}
	return errors.New("coord: lock watch closed")
}

// tryLock takes the lock only if nobody holds or waits for it; otherwise it
// removes its key and returns ErrLocked.
func (m *mutex) tryLock(ctx context.Context) error {
	first, err := m.enqueue(ctx)
	if err != nil || first {
		return err
	}
	if err := m.remove(ctx); err != nil {
		return err
	}
	return ErrLocked
}

// isOwner compares that the waiter's key is the one this mutex created.
func (m *mutex) isOwner() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(m.key), "=", m.rev)
}

// unlock deletes the key if it is still this mutex's; false when it was
// gone (lost with its lease).
func (m *mutex) unlock(ctx context.Context) (bool, error) {
	resp, err := m.cli.Txn(ctx).If(m.isOwner()).Then(clientv3.OpDelete(m.key)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// remove deletes the waiter's key: the cleanup of a failed wait. When the
// put's answer was lost (its revision unknown) the key is deleted whatever
// its revision; Locks keeps the session from putting it again meanwhile.
func (m *mutex) remove(ctx context.Context) error {
	if m.rev > 0 {
		_, err := m.cli.Txn(ctx).If(m.isOwner()).Then(clientv3.OpDelete(m.key)).Commit()
		return err
	}
	_, err := m.cli.Delete(ctx, m.key)
	return err
}
