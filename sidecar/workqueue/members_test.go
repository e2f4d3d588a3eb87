package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// memberKeys returns the member keys of batch and the ids each lists.
func memberKeys(t *testing.T, cli clientv3.KV, batch string) map[string][]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), batchPrefix(batch), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, kv := range resp.Kvs {
		suffix := strings.TrimPrefix(string(kv.Key), batchPrefix(batch))
		ids, err := memberIDs(suffix, kv.Value)
		if err != nil {
			t.Fatalf("member key %s: %v", kv.Key, err)
		}
		out[suffix] = ids
	}
	return out
}

// A batch's members are listed many to a key, one key per submit
// transaction, and every reader of a batch (BatchIDs, List, BatchPage and
// its cursor) sees each task exactly once, together with the tasks of a
// member key of the former layout (one key per task, D-size9).
func TestBatchMembersInKeysPerTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := newRig(t, "members", Config{MaxTxnOps: 16}, nil, nil)
	var specs []Spec
	for i := range 100 {
		specs = append(specs, Spec{ID: fmt.Sprintf("utt_%07d", 100-i), Queue: "q", Batch: "b", Payload: json.RawMessage(`{}`)})
	}
	specs = append(specs, Spec{ID: "other", Queue: "q", Batch: "b2", Payload: json.RawMessage(`{}`)}, Spec{ID: "plain", Queue: "q", Payload: json.RawMessage(`{}`)})
	if _, err := r.store.Submit(ctx, specs); err != nil {
		t.Fatal(err)
	}
	// A second submit into the batch, and a member of the former layout.
	submitSpecs(t, r.store, Spec{ID: "late", Queue: "q", Batch: "b"})
	if _, err := r.cli.Txn(ctx).Then(
		clientv3.OpPut(taskKey("old"), `{"q":"q","o":1,"b":"b","p":{}}`),
		clientv3.OpPut(formerMemberKey("b", "old"), ""),
	).Commit(); err != nil {
		t.Fatal(err)
	}

	keys := memberKeys(t, r.cli, "b")
	// 16 operations a transaction: 7 tasks (2 each) and the member key
	// and pin's share of the batch; 100 tasks are 15 transactions.
	if len(keys) != 15+1+1 {
		t.Errorf("%d member keys, want 17: %v", len(keys), slices.Collect(maps.Keys(keys)))
	}
	want := map[string]bool{"late": true, "old": true}
	for i := range 100 {
		want[fmt.Sprintf("utt_%07d", i+1)] = true
	}
	seen := map[string]int{}
	for _, ids := range keys {
		for _, id := range ids {
			seen[id]++
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("member keys list %d ids, want %d", len(seen), len(want))
	}
	for id, n := range seen {
		if !want[id] || n != 1 {
			t.Fatalf("id %q listed %d times (wanted: %v)", id, n, want[id])
		}
	}

	ids, err := r.store.BatchIDs(ctx, "b")
	if err != nil || len(ids) != len(want) {
		t.Fatalf("BatchIDs: %d ids, %v", len(ids), err)
	}
	// Key order: the first submit's transactions, the later submit's,
	// then the key of the former layout ("old" sorts after the digits).
	if ids[len(ids)-2] != "late" || ids[len(ids)-1] != "old" {
		t.Errorf("BatchIDs ends %v", ids[len(ids)-2:])
	}
	listed, more, err := r.store.List(ctx, ListFilter{Batch: "b"})
	if err != nil || more || len(listed) != len(want) {
		t.Fatalf("List: %d tasks, more %v, %v", len(listed), more, err)
	}

	// pageAll follows the pages' cursors to the end of the batch.
	pageAll := func(state State, limit, scan int) []string {
		var got []string
		after := ""
		for range 200 {
			page, err := r.store.BatchPage(ctx, "b", after, state, limit, scan)
			if err != nil {
				t.Fatal(err)
			}
			for _, ti := range page.Tasks {
				got = append(got, ti.ID)
			}
			if page.Next == "" {
				return got
			}
			after = page.Next
		}
		t.Fatalf("paging did not end: %v", got)
		return nil
	}
	// Pages of 7 follow the cursor through the batch: every task once.
	if paged := pageAll("", 7, 0); !reflect.DeepEqual(paged, ids) {
		t.Fatalf("pages give\n%v\nBatchIDs gives\n%v", paged, ids)
	}
	// A filtered page that scans only part of the batch goes on from
	// where it stopped.
	if _, err := r.store.Cancel(ctx, "utt_0000050"); err != nil {
		t.Fatal(err)
	}
	if cancelled := pageAll(StateCancelled, 5, 5); !reflect.DeepEqual(cancelled, []string{"utt_0000050"}) {
		t.Fatalf("cancelled tasks paged: %v", cancelled)
	}
	if _, err := r.store.BatchPage(ctx, "b", "utt_0000001", "", 5, 0); err == nil || !strings.Contains(err.Error(), "after") {
		t.Fatalf("a task id as the cursor: %v", err)
	}
}

// Two submits into one batch with orders from the same nanosecond (a
// clock that stands still) write separate member keys: the second moves
// its orders past the first's key instead of overwriting it.
func TestMemberKeyOfTheSameOrderIsNotOverwritten(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.UnixMilli(1_700_000_000_000))
	r := newRig(t, "member-clash", Config{Clock: clock}, nil, nil)
	submitSpecs(t, r.store, Spec{ID: "a1", Queue: "q", Batch: "b"}, Spec{ID: "a2", Queue: "q", Batch: "b"})
	submitSpecs(t, r.store, Spec{ID: "b1", Queue: "q", Batch: "b"})
	keys := memberKeys(t, r.cli, "b")
	base := fmt.Sprintf("%019d", clock.Now().UnixNano())
	next := fmt.Sprintf("%019d", clock.Now().UnixNano()+chunkSpan)
	if want := map[string][]string{base: {"a1", "a2"}, next: {"b1"}}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("member keys %v, want %v", keys, want)
	}
	ids, err := r.store.BatchIDs(ctx, "b")
	if err != nil || !reflect.DeepEqual(ids, []string{"a1", "a2", "b1"}) {
		t.Fatalf("BatchIDs %v %v", ids, err)
	}
	// The moved task's spec and ready entry carry the moved order, which
	// is how retention finds its key.
	info, err := r.store.Get(ctx, "b1")
	if err != nil || info.Status.Order != clock.Now().UnixNano()+chunkSpan {
		t.Fatalf("b1: %+v %v", info, err)
	}
}

// Retention removes each finished task's id from its member key, and the
// key with its last id; the pin of a batch whose tasks are all gone goes
// too. Tasks still pending stay listed, including one of the former layout.
func TestRetentionRemovesMembers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.UnixMilli(1_700_000_000_000))
	r := newRig(t, "member-retention", Config{Clock: clock, MaxTxnOps: 16, Retention: time.Hour}, nil, nil)
	var specs []Spec
	for i := range 30 {
		specs = append(specs, Spec{ID: fmt.Sprintf("t%02d", i), Queue: "q", Batch: "b", Payload: json.RawMessage(`{}`)})
	}
	if _, err := r.store.Submit(ctx, specs, WithPin(Pin{Name: "cfg", Revision: 1, Document: json.RawMessage(`{}`)})); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Txn(ctx).Then(
		clientv3.OpPut(taskKey("old-done"), `{"q":"q","o":1,"b":"b","p":{}}`),
		clientv3.OpPut(formerMemberKey("b", "old-done"), ""),
		clientv3.OpPut(readyKey("q", 0, 1, "old-done"), `2{"b":"b"}`),
		clientv3.OpPut(taskKey("old-pending"), `{"q":"q","o":2,"b":"b","p":{}}`),
		clientv3.OpPut(formerMemberKey("b", "old-pending"), ""),
		clientv3.OpPut(readyKey("q", 0, 2, "old-pending"), `2{"b":"b"}`),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{"t03": true, "t17": true, "t29": true, "old-pending": true}
	for _, sp := range specs {
		if !keep[sp.ID] {
			if _, err := r.store.Cancel(ctx, sp.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := r.store.Cancel(ctx, "old-done"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	r.d.collect(ctx)

	var left []string
	for _, ids := range memberKeys(t, r.cli, "b") {
		left = append(left, ids...)
	}
	slices.Sort(left)
	if want := []string{"old-pending", "t03", "t17", "t29"}; !reflect.DeepEqual(left, want) {
		t.Fatalf("members left %v, want %v", left, want)
	}
	if p, err := r.store.GetPin(ctx, "b"); err != nil || p == nil {
		t.Fatalf("pin of a batch with tasks left: %v %v", p, err)
	}
	// The rest finish and are removed: nothing of the batch is left.
	for id := range keep {
		if _, err := r.store.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Hour)
	r.d.collect(ctx)
	resp, err := r.cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if strings.HasPrefix(k, prefixBatch) || strings.HasPrefix(k, prefixTask) || strings.HasPrefix(k, prefixPin) {
			t.Errorf("left after retention: %s", k)
		}
	}
}

// FuzzMembers: a member list gives back the ids it was made of, sorted,
// and whatever decodes from arbitrary bytes encodes to the same bytes.
func FuzzMembers(f *testing.F) {
	f.Add("utt_0000001 utt_0000002 utt_0000010", []byte("1\x00\x03abc"))
	f.Add("a b ab abc", []byte("1\x00\x01a\x01\x01b"))
	f.Fuzz(func(t *testing.T, list string, raw []byte) {
		set := map[string]bool{}
		for _, id := range strings.Fields(list) {
			if ValidateID(id) == nil {
				set[id] = true
			}
		}
		ids := slices.Sorted(maps.Keys(set))
		back, err := decodeMembers([]byte(encodeMembers(ids)))
		if err != nil || len(ids) > 0 && !reflect.DeepEqual(back, ids) {
			t.Fatalf("members %q came back as %q (%v)", ids, back, err)
		}
		if got, err := decodeMembers(raw); err == nil && encodeMembers(got) != string(raw) {
			t.Fatalf("%q decodes to %q, which encodes to %q", raw, got, encodeMembers(got))
		}
	})
}

// FuzzSpecRecord: a spec decodes to what was encoded, and arbitrary bytes
// in the spec's format decode or fail without a panic.
func FuzzSpecRecord(f *testing.F) {
	f.Add("tts", int32(0), int64(1_700_000_000_000_000_000), int32(0), int64(0), "corpus", false, "spk_1", "model", "glm", int64(0), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", []byte(`{"uttid":"a"}`), []byte("3\x00\x01q"))
	f.Add("q", int32(-1000), int64(0), int32(1000), int64(86400000), "", true, "", "", "", int64(1_800_000_000_000), "tp", []byte(`{}`), []byte{'3', 0xff, 0xff})
	f.Fuzz(func(t *testing.T, queue string, prio int32, order int64, maxAttempts int32, timeout int64, batch string, pinned bool, affinity, lk, lv string, notBefore int64, tp string, payload, raw []byte) {
		sp := spec{Queue: queue, Priority: prio, Order: order, NotBeforeMS: max(notBefore, 0), Payload: payload, Traceparent: tp}
		sp.routing = routing{MaxAttempts: max(maxAttempts, 0), TimeoutMS: max(timeout, 0), Batch: batch, Pinned: pinned, Affinity: affinity}
		if lk != "" {
			sp.Require = map[string]string{lk: lv}
		}
		back, err := decodeSpec(encodeSpec(sp))
		if err != nil {
			t.Fatalf("%+v does not decode: %v", sp, err)
		}
		if len(sp.Payload) == 0 {
			sp.Payload = nil
		}
		if len(back.Payload) == 0 {
			back.Payload = nil
		}
		if !reflect.DeepEqual(back, sp) {
			t.Fatalf("spec does not round trip:\n%+v\n%+v", sp, back)
		}
		_, _ = decodeSpec(append([]byte{specFormat}, raw...))
	})
}

// Retention rewrites a member key once per transaction of removals, not
// once per task: each version is history until the next compaction (a
// key of 60 ids rewritten per task wrote ~1,800 ids of it).
func TestRetentionRewritesAMemberKeyPerTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.UnixMilli(1_700_000_000_000))
	r := newRig(t, "member-rewrites", Config{Clock: clock, Retention: time.Hour}, nil, nil)
	var specs []Spec
	for i := range 60 {
		specs = append(specs, Spec{ID: fmt.Sprintf("t%02d", i), Queue: "q", Batch: "b", Payload: json.RawMessage(`{}`)})
	}
	if _, err := r.store.Submit(ctx, specs); err != nil {
		t.Fatal(err)
	}
	if n := len(memberKeys(t, r.cli, "b")); n != 1 {
		t.Fatalf("%d member keys, want 1", n)
	}
	for _, sp := range specs {
		if _, err := r.store.Cancel(ctx, sp.ID); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := r.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	r.d.collect(ctx)
	if n := len(memberKeys(t, r.cli, "b")); n != 0 {
		t.Fatalf("%d member keys left", n)
	}
	// The key's versions since: 128 operations a transaction are 25
	// tasks (5 deletes and a compare each), so 60 tasks are 3 writes.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	writes := 0
	for wr := range r.cli.Watch(wctx, batchPrefix("b"), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		for _, ev := range wr.Events {
			writes++
			if ev.Type == clientv3.EventTypeDelete {
				wcancel()
			}
		}
	}
	if writes != 3 {
		t.Fatalf("the member key was written %d times by retention, want 3", writes)
	}
}
