package workqueue

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Records written before D-size6 (the spec with long field names and the
// whole Status in the ready entry) are read as they were meant: a task
// left pending by the former format keeps its payload, attempt, settings,
// batch and trace when this version hands it out, so upgrading needs no
// drain (D-size7). And a ready entry of this format is unreadable as a
// whole Status, so a sidecar of the former format skips it.
func TestReadyAndSpecOfTheFormerFormat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := newRig(t, "former-format", Config{}, nil, nil)
	eventually(t, 10*time.Second, "scheduler elected", r.d.Leading)
	order := time.Now().UnixNano()
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	st := Status{State: StatePending, Queue: "q", Priority: 7, MaxAttempts: 5, TimeoutMS: 60000, Batch: "b", Attempt: 2,
		Order: order, UpdatedMS: order / 1e6, Affinity: "spk_1"}
	st.Index = readyKey("q", 7, order, "old1")
	oldSpec := `{"id":"old1","queue":"q","payload":{"text":"hi"},"priority":7,"max_attempts":5,"timeout_ms":60000,"batch":"b","traceparent":"` + tp + `","created_ms":1700000000000}`
	if _, err := r.cli.Txn(ctx).Then(
		clientv3.OpPut(taskKey("old1"), oldSpec),
		clientv3.OpPut(stateKey("old1"), st.encode()),
		clientv3.OpPut(formerMemberKey("b", "old1"), ""),
		clientv3.OpPut(st.Index, st.encode()),
	).Commit(); err != nil {
		t.Fatal(err)
	}

	info, err := r.store.Get(ctx, "old1")
	if err != nil || string(info.Payload) != `{"text":"hi"}` || info.CreatedMS != 1700000000000 || info.Status.Attempt != 2 {
		t.Fatalf("get: %+v %v", info, err)
	}
	c, err := r.d.Next(ctx, []string{"q"}, 5*time.Second, nil)
	if err != nil || c == nil {
		t.Fatalf("next: %v %v", c, err)
	}
	if string(c.Payload) != `{"text":"hi"}` || c.Traceparent != tp || c.CreatedMS != 1700000000000 {
		t.Errorf("handed out with payload %s, traceparent %q, created %d", c.Payload, c.Traceparent, c.CreatedMS)
	}
	if s := c.Status; s.Attempt != 3 || s.MaxAttempts != 5 || s.TimeoutMS != 60000 || s.Batch != "b" || s.Priority != 7 || s.Affinity != "spk_1" {
		t.Errorf("handed out as %+v", s)
	}
	if err := r.d.Complete(ctx, c.Claim(), nil); err != nil {
		t.Fatal(err)
	}

	// The former code read a ready value as a whole Status; this format's
	// values must not read so, or a sidecar of it would hand the task out
	// with zero settings.
	// And D-size6's code read an empty value or one starting with "2":
	// it cannot read this format's spec, so it must skip this format's
	// entries (D-size9), the plain task's included.
	for _, s := range []Status{
		{State: StatePending, Queue: "q", Batch: "b", Order: order, MaxAttempts: 3, TimeoutMS: 300000},
		{State: StatePending, Queue: "q", Attempt: 1, Order: order, MaxAttempts: 3, TimeoutMS: 300000},
		{State: StatePending, Queue: "q", Order: order, UpdatedMS: order / 1e6, MaxAttempts: 3, TimeoutMS: 300000},
	} {
		v := encodeReady(s)
		var former Status
		if v == "" || json.Unmarshal([]byte(v), &former) == nil {
			t.Errorf("ready value %q reads as a whole Status: %+v", v, former)
		}
		if v[0] == '2' {
			t.Errorf("ready value %q reads as D-size6's", v)
		}
	}
}

// Records of D-size6 (the short JSON spec, ready values that are empty or
// start with "2", one member key per task) are read as they were meant:
// tasks left pending by that version are listed in their batch, handed out
// with their payload, trace and settings, and removed from their batch by
// retention (D-size9).
func TestSpecReadyAndMembersOfD_size6(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := newRig(t, "former-d-size6", Config{}, nil, nil)
	eventually(t, 10*time.Second, "scheduler elected", r.d.Leading)
	order := time.Now().UnixNano()
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if _, err := r.cli.Txn(ctx).Then(
		// What D-size6 wrote for a plain task and for one in batch b with
		// 5 attempts: the trace id's 25 bytes in base64.
		clientv3.OpPut(taskKey("plain6"), `{"q":"q","o":`+strconv.FormatInt(order, 10)+`,"p":{"text":"plain"},"tc":"CvdlGRbNQ92ESOshHIAxnLeta3FpIDMxAQ"}`),
		clientv3.OpPut(readyKey("q", 0, order, "plain6"), ""),
		clientv3.OpPut(taskKey("batch6"), `{"q":"q","o":`+strconv.FormatInt(order+1, 10)+`,"m":5,"b":"b","p":{"text":"batched"}}`),
		clientv3.OpPut(readyKey("q", 0, order+1, "batch6"), `2{"m":5,"b":"b"}`),
		clientv3.OpPut(formerMemberKey("b", "batch6"), ""),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	submitSpecs(t, r.store, Spec{ID: "new", Queue: "q", Batch: "b"})
	if ids, err := r.store.BatchIDs(ctx, "b"); err != nil || !reflect.DeepEqual(ids, []string{"new", "batch6"}) {
		t.Fatalf("batch b lists %v (%v)", ids, err)
	}
	got := map[string]*Claimed{}
	for range 3 {
		c, err := r.d.Next(ctx, []string{"q"}, 5*time.Second, nil)
		if err != nil || c == nil {
			t.Fatalf("next: %v %v", c, err)
		}
		got[c.ID] = c
		if err := r.d.Complete(ctx, c.Claim(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if c := got["plain6"]; c == nil || string(c.Payload) != `{"text":"plain"}` || c.Traceparent != tp || c.CreatedMS != order/1e6 || c.Status.MaxAttempts != 3 {
		t.Errorf("plain6 handed out as %+v", c)
	}
	if c := got["batch6"]; c == nil || string(c.Payload) != `{"text":"batched"}` || c.Status.Batch != "b" || c.Status.MaxAttempts != 5 {
		t.Errorf("batch6 handed out as %+v", c)
	}
}
