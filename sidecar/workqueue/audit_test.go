package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// racingKV runs race before the first conditional transaction it commits:
// another writer that gets in between the operator's read and write.
type racingKV struct {
	clientv3.KV
	race func()
}

func (k *racingKV) Txn(ctx context.Context) clientv3.Txn {
	return &racingTxn{Txn: k.KV.Txn(ctx), k: k}
}

type racingTxn struct {
	clientv3.Txn
	k    *racingKV
	cond bool
}

func (t *racingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cond = len(cs) > 0
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *racingTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }

func (t *racingTxn) Commit() (*clientv3.TxnResponse, error) {
	if race := t.k.race; t.cond && race != nil {
		t.k.race = nil
		race()
	}
	return t.Txn.Commit()
}

// Hardening issue, "Audit": every operator action that changes something
// writes exactly one record, in its own transaction, saying what and who;
// an attempt whose compare fails writes none, and neither does an action
// that changes nothing or is refused.
func TestOperatorActionsWriteOneRecordWithTheAction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(t)}, Namespace: "audited"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	actor := audit.Actor{UID: 1234, User: "ops", Host: "bastion", PID: 42, EtcdUser: "operator"}
	aw, err := audit.NewWriter(cli.KV, audit.WriterConfig{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	rk := &racingKV{KV: cli.KV}
	s, err := NewStore(rk, Config{Audit: aw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, []Spec{{ID: "t1", Queue: "q", Payload: json.RawMessage(`{}`)}, {ID: "t2", Queue: "q", Payload: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	var want []string
	check := func(step string) {
		t.Helper()
		recs, _, _, err := audit.List(ctx, cli.KV, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			if r.Actor != actor || r.TimeMS == 0 || r.Revision == 0 {
				t.Errorf("%s: record %+v does not say who and when", step, r)
			}
			got = append(got, fmt.Sprintf("%s %s %s", r.Action, r.Object, r.Detail))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: records\n%q\nwant\n%q", step, got, want)
		}
	}

	// Another writer moves t1 between the cancel's read and its write:
	// that attempt fails its compare and must leave no record; the retry
	// cancels and leaves one.
	// t1 was never claimed, so it has no state yet: the move writes its
	// first one, as a claim and a release would.
	rk.race = func() {
		resp, err := cli.Get(ctx, taskKey("t1"))
		if err == nil {
			var sp spec
			if sp, err = decodeSpec(resp.Kvs[0].Value); err == nil {
				_, err = cli.Put(ctx, stateKey("t1"), pendingStatus("t1", sp).encode())
			}
		}
		if err != nil {
			t.Error(err)
		}
	}
	if res, err := s.Cancel(ctx, "t1"); err != nil || res.State != StateCancelled {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	if rk.race != nil {
		t.Fatal("the race did not run")
	}
	want = append(want, "task.cancel t1 was PENDING")
	check("cancel after a failed compare")
	if _, err := s.Cancel(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	check("cancelling a cancelled task again")

	if changed, err := s.Retry(ctx, "t1"); err != nil || !changed {
		t.Fatalf("retry: %v %v", changed, err)
	}
	want = append(want, "task.retry t1 was CANCELLED")
	check("retry")
	if changed, err := s.Retry(ctx, "t1"); err != nil || changed {
		t.Fatalf("retry of a task retried already: %v %v, want no change", changed, err)
	}
	check("retry that changes nothing")
	if _, err := s.Cancel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancel of a missing task: %v", err)
	}
	check("cancel of a missing task")

	for _, step := range []struct {
		pause, changed bool
		record         string
	}{{true, true, "queue.pause q "}, {true, false, ""}, {false, true, "queue.resume q "}, {false, false, ""}} {
		f := s.Resume
		if step.pause {
			f = s.Pause
		}
		changed, err := f(ctx, "q")
		if err != nil || changed != step.changed {
			t.Fatalf("pause %v: changed %v, %v; want changed %v", step.pause, changed, err, step.changed)
		}
		if step.record != "" {
			want = append(want, step.record)
		}
		check(fmt.Sprintf("pause %v (changes: %v)", step.pause, step.changed))
	}
	paused, err := s.Paused(ctx)
	if err != nil || len(paused) != 0 {
		t.Fatalf("paused queues at the end: %v %v", paused, err)
	}
}
