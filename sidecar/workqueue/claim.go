package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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

	secret string // the claim handle's secret (see ParseClaim), set when held
}

// Claim returns the claim handle.
func (c *Claimed) Claim() string { return FormatClaim(c.ID, c.Token, c.secret) }

// Deadline returns when the claim lapses without a heartbeat.
func (c *Claimed) Deadline() time.Time { return time.UnixMilli(c.Status.DeadlineMS) }

var (
	errConflict = errors.New("workqueue: claim conflict")
	errZombie   = errors.New("workqueue: ready entry of a claimed task")
)

// claimStatus is the CLAIMED status a claim writes: the pending status
// with the attempt counted, the holder and the deadline.
func (s *Store) claimStatus(pending Status, h Holder, wait string) Status {
	now := s.cfg.Now()
	st := pending
	st.State = StateClaimed
	st.Attempt++
	st.Index = ""
	st.Holder, st.Session, st.Lease = h.Worker, h.Session, int64(h.Lease)
	st.DeadlineMS = ms(now.Add(st.Timeout()))
	st.ReadyMS = pending.UpdatedMS
	st.UpdatedMS = ms(now)
	st.Wait = wait
	return st
}

// claimOps are the writes of a claim of task id with status st: delete
// the ready entry, create the claim key bound to the holder's lease, write
// the status (creating state/<id> at a task's first claim) and the durable
// run marker, and tell the holder through the
// wait key (putWait: how the wait key is written).
func claimOps(readyKey, id string, st Status, putWait clientv3.Op) []clientv3.Op {
	enc := st.encode()
	return []clientv3.Op{
		clientv3.OpDelete(readyKey),
		clientv3.OpPut(claimKey(id), enc, clientv3.WithLease(clientv3.LeaseID(st.Lease))),
		clientv3.OpPut(stateKey(id), enc),
		clientv3.OpPut(runKey(id), ""),
		putWait,
	}
}

// claim takes the task of one ready entry for the holder itself (Next
// with wait 0): in one transaction that compares the entry's mod revision,
// it makes the writes of claimOps, with a new wait key under the holder's
// lease, and reads the task's spec. It returns errConflict when the entry
// is gone or changed (another claimer won).
func (s *Store) claim(ctx context.Context, key string, modRev int64, pending Status, h Holder, wait string) (*Claimed, error) {
	e, err := parseReadyKey(key)
	if err != nil {
		return nil, err
	}
	st := s.claimStatus(pending, h, wait)
	then := claimOps(key, e.ID, st, clientv3.OpPut(wait, waitRecord{Task: e.ID}.encode(), clientv3.WithLease(h.Lease)))
	then = append(then, clientv3.OpGet(taskKey(e.ID)))
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
	var pin []*mvccpb.KeyValue
	if st.Pinned {
		pin = resp.Responses[6].GetResponseRange().Kvs
	}
	return c, c.fill(resp.Responses[5].GetResponseRange().Kvs, pin)
}

// readClaim reads the claim of task id made with token (an assignment seen
// on a wait key) with the task's spec. It returns ErrClaimLost when that
// claim has ended; a non-nil Claimed with an error when the claim is live
// but the task cannot be read.
func (s *Store) readClaim(ctx context.Context, id string, token int64) (*Claimed, error) {
	resp, err := s.kv.Txn(ctx).Then(clientv3.OpGet(claimKey(id)), clientv3.OpGet(taskKey(id)), clientv3.OpGet(cancelKey(id), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return nil, err
	}
	ckvs := resp.Responses[0].GetResponseRange().Kvs
	if len(ckvs) == 0 || ckvs[0].CreateRevision != token {
		return nil, ErrClaimLost
	}
	st, err := decodeStatus(ckvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("task %s: bad claim status: %w", id, err)
	}
	st.CancelRequested = st.CancelRequested || resp.Responses[2].GetResponseRange().Count > 0
	c := &Claimed{ID: id, Token: token, Status: st}
	var pin []*mvccpb.KeyValue
	if st.Pinned {
		presp, err := s.kv.Get(ctx, pinKey(st.Batch))
		if err != nil {
			return nil, err
		}
		pin = presp.Kvs
	}
	return c, c.fill(resp.Responses[1].GetResponseRange().Kvs, pin)
}

// fill sets the fields of c read from the task's spec and its batch's pin.
func (c *Claimed) fill(specKVs, pin []*mvccpb.KeyValue) error {
	if len(specKVs) == 0 {
		return fmt.Errorf("task %s has no spec", c.ID)
	}
	sp, err := decodeSpec(specKVs[0].Value)
	if err != nil {
		return fmt.Errorf("task %s: bad spec: %w", c.ID, err)
	}
	c.Payload, c.Traceparent, c.CreatedMS = sp.Payload, sp.Traceparent, sp.CreatedMS()
	if c.Status.Pinned {
		if len(pin) == 0 {
			return fmt.Errorf("task %s: batch %s has a pinned config but its pin is gone", c.ID, c.Status.Batch)
		}
		c.Pin = &Pin{}
		if err := json.Unmarshal(pin[0].Value, c.Pin); err != nil {
			return fmt.Errorf("task %s: batch %s: unreadable pin: %w", c.ID, c.Status.Batch, err)
		}
	}
	return nil
}

// dropZombie deletes a ready entry whose task is claimed already. It cannot
// arise from the transactions in this package; it is removed so that it
// cannot block the queue if it ever does.
func (s *Store) dropZombie(ctx context.Context, key string, modRev int64) error {
	_, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).Commit()
	return err
}
