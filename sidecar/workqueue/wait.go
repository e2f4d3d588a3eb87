package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A wait key, q/w/<lease>/<seq>, is one Next call of one sidecar waiting
// for a task. The sidecar puts it under its lease; the scheduler assigns a
// task to it by overwriting its value (waitRecord.Task) in the transaction
// that creates the claim; the transaction that ends the claim deletes it.
// A sidecar watches only its own q/w/<lease>/ prefix, so a task's events
// reach the scheduler and the one sidecar it is assigned to, whatever the
// size of the fleet.

// waitRecord is the value of a wait key.
type waitRecord struct {
	Queues  []string          `json:"q,omitempty"` // in the caller's order of preference
	Session string            `json:"s,omitempty"` // the worker session, or ""
	Holder  string            `json:"h,omitempty"` // the sidecar's worker id
	Labels  map[string]string `json:"l,omitempty"` // the sidecar's labels, for Require
	// Affinity is the affinity key of the last task this worker session
	// (or, without a session, this sidecar) was handed.
	Affinity string `json:"a,omitempty"`

	// Task is set by the scheduler's assignment: the task now claimed for
	// this waiter. The fencing token is the revision of that put.
	Task string `json:"t,omitempty"`
	// Cancel is set by an operator's cancel of the assigned task, with
	// Token, the claim's fencing token, so that a sidecar that reads the
	// notice before it saw the assignment still learns of both.
	Cancel bool  `json:"c,omitempty"`
	Token  int64 `json:"k,omitempty"`
}

func (r waitRecord) encode() string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a waitRecord always marshals
	}
	return string(b)
}

func decodeWait(b []byte) (waitRecord, error) {
	var r waitRecord
	err := json.Unmarshal(b, &r)
	return r, err
}

// waitPrefix is the prefix of the wait keys of the sidecar holding lease.
func waitPrefix(lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s%016x/", prefixWait, uint64(lease))
}

func waitKey(lease clientv3.LeaseID, seq uint64) string {
	return waitPrefix(lease) + strconv.FormatUint(seq, 10)
}

// parseWaitKey returns the lease and sequence number of a wait key.
func parseWaitKey(k string) (clientv3.LeaseID, uint64, error) {
	rest, ok := strings.CutPrefix(k, prefixWait)
	if !ok {
		return 0, 0, fmt.Errorf("not a wait key: %q", k)
	}
	ls, ss, ok := strings.Cut(rest, "/")
	l, err1 := strconv.ParseUint(ls, 16, 64)
	s, err2 := strconv.ParseUint(ss, 10, 64)
	if !ok || len(ls) != 16 || err1 != nil || err2 != nil || fmt.Sprintf("%016x", l) != ls || strconv.FormatUint(s, 10) != ss {
		return 0, 0, fmt.Errorf("malformed wait key: %q", k)
	}
	return clientv3.LeaseID(l), s, nil
}

// putWait registers a waiting Next call; it returns the key's revision.
func (s *Store) putWait(ctx context.Context, key string, rec waitRecord, lease clientv3.LeaseID) (int64, error) {
	resp, err := s.kv.Put(ctx, key, rec.encode(), clientv3.WithLease(lease))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// dropWait deletes a wait key that is still unassigned (its mod revision
// is rev). It reports false when the key changed: a task was assigned to
// it (or it is gone with its lease).
func (s *Store) dropWait(ctx context.Context, key string, rev int64) (bool, error) {
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// waitOps are the writes that end a claim's wait key, if it has one, and
// clear it from st.
func waitOps(st *Status) []clientv3.Op {
	if st.Wait == "" {
		return nil
	}
	k := st.Wait
	st.Wait = ""
	return []clientv3.Op{clientv3.OpDelete(k)}
}

// cancelNoticeOp tells the sidecar holding a claim, through the claim's
// wait key, that an operator asked to cancel task id.
func cancelNoticeOp(wait, id string, token int64) clientv3.Op {
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(wait), ">", 0)},
		[]clientv3.Op{clientv3.OpPut(wait, waitRecord{Task: id, Cancel: true, Token: token}.encode(), clientv3.WithIgnoreLease())},
		nil)
}
