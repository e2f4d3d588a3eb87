package workqueue

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A worker's answer, or the loss of its claim, that races with an
// operator's cancel (the holder's status does not know of the cancel yet)
// still ends the task CANCELLED: the transaction checks the cancel marker
// itself.
func TestFailRacingCancelEndsCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, cli := privateEtcd(t, "race")
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, answer := range []string{"fail", "release", "last-attempt", "abandon", "orphan"} {
		id := "t-" + answer
		sp := Spec{ID: id, Queue: "q", Payload: json.RawMessage(`{}`)}
		if answer == "last-attempt" {
			sp.MaxAttempts = 1
		}
		if err := s.Normalize(&sp, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Submit(ctx, []Spec{sp}); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, readyPrefix("q"), clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("ready: %v %v", resp, err)
		}
		st, _ := decodeStatus(resp.Kvs[0].Value)
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.claim(ctx, string(resp.Kvs[0].Key), resp.Kvs[0].ModRevision, st, Holder{Worker: "w", Lease: lease.ID}, waitKey(lease.ID, 1))
		if err != nil {
			t.Fatal(err)
		}
		if res, err := s.Cancel(ctx, id); err != nil || !res.Requested {
			t.Fatalf("cancel: %+v %v", res, err)
		}
		// c.Status has CancelRequested false: the holder has not heard.
		// Each answer reports the state it left the task in: CANCELLED.
		var state State
		switch answer {
		case "abandon": // the worker's session closed
			state, err = s.abandon(ctx, id, c.Token, 0, c.Status, "worker session closed")
		case "orphan": // the holder's lease expired; another sidecar recovers
			if _, err := cli.Revoke(ctx, lease.ID); err != nil {
				t.Fatal(err)
			}
			var r recovered
			r, err = s.recoverOrphan(ctx, id, c.Token, c.Status, "lease expired")
			if !r.ok && err == nil {
				t.Fatalf("orphan not recovered")
			}
			state = r.state
		case "release":
			state, err = s.release(ctx, id, c.Token, c.Status)
		default:
			state, _, err = s.fail(ctx, id, c.Token, c.Status, "boom", false, 0)
		}
		if state != StateCancelled {
			t.Errorf("%s: reported state %q, want CANCELLED", answer, state)
		}
		if err != nil {
			t.Fatalf("%s: %v", answer, err)
		}
		info, err := s.Get(ctx, id)
		if err != nil || info.Status.State != StateCancelled || info.Cancelling {
			t.Fatalf("%s: after answering: %+v %v", answer, info, err)
		}
		// Retry brings it back with fresh attempts; it is handed out again.
		if changed, err := s.Retry(ctx, id); err != nil || !changed {
			t.Fatalf("%s: retry: %v %v", answer, changed, err)
		}
		info, _ = s.Get(ctx, id)
		if info.Status.State != StatePending || info.Status.Attempt != 0 {
			t.Fatalf("%s: after retry: %+v", answer, info.Status)
		}
		if _, err := s.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
		gc, err := cli.Get(ctx, prefixGC, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if gc.Count != 1 {
			t.Fatalf("%s: %d retention entries, want 1 (the retry removes the old one)", answer, gc.Count)
		}
		if _, err := cli.Delete(ctx, prefixGC, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	}
}
