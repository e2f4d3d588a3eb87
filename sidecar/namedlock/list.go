package namedlock

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LockWaiter is one key under locks/<name>/: the holder or a waiter.
type LockWaiter struct {
	// Token is the key's create revision: the fencing token of the holder,
	// the place in line of a waiter.
	Token int64 `json:"token"`
	// Owner says who waits; empty when its lockowners/ entry is gone.
	Owner LockOwner `json:"owner"`
}

// LockInfo describes one lock: its holder and its waiters in order.
type LockInfo struct {
	Name    string       `json:"name"`
	Holder  LockWaiter   `json:"holder"`
	Waiters []LockWaiter `json:"waiters"`
}

// ListLocks reads every lock that is held, sorted by name. kv must be
// namespaced.
func ListLocks(ctx context.Context, kv clientv3.KV) ([]LockInfo, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(PrefixLocks, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)),
		clientv3.OpGet(PrefixLockOwners, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	owners := map[string]LockOwner{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var o LockOwner
		if json.Unmarshal(kv.Value, &o) == nil {
			owners[strings.TrimPrefix(string(kv.Key), PrefixLockOwners)] = o
		}
	}
	byName := map[string][]LockWaiter{}
	var names []string
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		name, lease, ok := parseWaiterKey(string(kv.Key))
		if !ok {
			continue
		}
		if _, ok := byName[name]; !ok {
			names = append(names, name)
		}
		byName[name] = append(byName[name], LockWaiter{Token: kv.CreateRevision, Owner: owners[lease]})
	}
	out := make([]LockInfo, 0, len(names))
	for _, name := range names { // keys sorted by name already
		ws := byName[name]
		slices.SortFunc(ws, func(a, b LockWaiter) int { return cmp.Compare(a.Token, b.Token) })
		out = append(out, LockInfo{Name: name, Holder: ws[0], Waiters: ws[1:]})
	}
	return out, nil
}
