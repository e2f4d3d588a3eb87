package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Holder identifies who makes a claim.
type Holder struct {
	Worker  string           // the sidecar's worker id
	Session string           // the worker session, or ""
	Lease   clientv3.LeaseID // the sidecar's lease; the claim key is bound to it
}

// Claimed is a task claimed by this sidecar.
type Claimed struct {
	ID      string
	Token   int64 // fencing token: the claim key's create revision
	Status  Status
	Payload json.RawMessage
	// Traceparent is the W3C trace context the worker continues: the
	// claim's span when the dispatcher traces (see Dispatcher.Next),
	// otherwise the one stored at submit.
	Traceparent string
	CreatedMS   int64
	// Pin is the config document pinned with the task's batch, or nil.
	Pin *Pin
}

// Claim returns the claim handle.
func (c *Claimed) Claim() string { return FormatClaim(c.ID, c.Token) }

// Deadline returns when the claim lapses without a heartbeat.
func (c *Claimed) Deadline() time.Time { return time.UnixMilli(c.Status.DeadlineMS) }

var (
	errConflict = errors.New("workqueue: claim conflict")
	errZombie   = errors.New("workqueue: ready entry of a claimed task")
)

// claim takes the task of one ready entry: in one transaction that compares
// the entry's mod revision, it deletes the entry, writes the claim key bound
// to the holder's lease, writes the CLAIMED status and the durable run
// marker, and reads the task's spec. It returns errConflict when the entry
// is gone or changed (another claimer won).
func (s *Store) claim(ctx context.Context, key string, modRev int64, pending Status, h Holder) (*Claimed, error) {
	e, err := parseReadyKey(key)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	st := pending
	st.State = StateClaimed
	st.Attempt++
	st.Index = ""
	st.Holder, st.Session, st.Lease = h.Worker, h.Session, int64(h.Lease)
	st.DeadlineMS = ms(now.Add(st.Timeout()))
	st.UpdatedMS = ms(now)
	enc := st.encode()
	then := []clientv3.Op{
		clientv3.OpDelete(key),
		clientv3.OpPut(claimKey(e.ID), enc, clientv3.WithLease(h.Lease)),
		clientv3.OpPut(stateKey(e.ID), enc),
		clientv3.OpPut(runKey(e.ID), ""),
		clientv3.OpGet(taskKey(e.ID)),
	}
	if st.Pinned {
		then = append(then, clientv3.OpGet(pinKey(st.Batch)))
	}
	resp, err := s.kv.Txn(ctx).
		If(
			clientv3.Compare(clientv3.ModRevision(key), "=", modRev),
			clientv3.Compare(clientv3.CreateRevision(claimKey(e.ID)), "=", 0),
		).
		Then(then...).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && kvs[0].ModRevision == modRev {
			return nil, errZombie
		}
		return nil, errConflict
	}
	c := &Claimed{ID: e.ID, Token: resp.Header.Revision, Status: st}
	kvs := resp.Responses[4].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return c, fmt.Errorf("task %s has no spec", e.ID)
	}
	var sp spec
	if err := json.Unmarshal(kvs[0].Value, &sp); err != nil {
		return c, fmt.Errorf("task %s: bad spec: %w", e.ID, err)
	}
	c.Payload, c.Traceparent, c.CreatedMS = sp.Payload, sp.Traceparent, sp.CreatedMS
	if st.Pinned {
		pins := resp.Responses[5].GetResponseRange().Kvs
		if len(pins) == 0 {
			return c, fmt.Errorf("task %s: batch %s has a pinned config but its pin is gone", e.ID, st.Batch)
		}
		c.Pin = &Pin{}
		if err := json.Unmarshal(pins[0].Value, c.Pin); err != nil {
			return c, fmt.Errorf("task %s: batch %s: unreadable pin: %w", e.ID, st.Batch, err)
		}
	}
	return c, nil
}

// dropZombie deletes a ready entry whose task is claimed already. It cannot
// arise from the transactions in this package; it is removed so that it
// cannot block the queue if it ever does.
func (s *Store) dropZombie(ctx context.Context, key string, modRev int64) error {
	_, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).Commit()
	return err
}
