package workqueue

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var t0 = time.Unix(1_763_000_000, 0)

// testEntry is a ready entry of queue q with priority p, submitted n-th.
func testEntry(q string, p int32, n int, affinity string, require map[string]string) entry {
	id := fmt.Sprintf("t%03d", n)
	st := Status{State: StatePending, Queue: q, Priority: p, Order: int64(n), Affinity: affinity, Require: require}
	return entry{key: readyKey(q, p, int64(n), id), modRev: int64(100 + n), st: st, seen: t0}
}

// loadedMatcher returns a matcher whose backlogs of queues are loaded with
// entries.
func loadedMatcher(entries []entry, queues ...string) *matcher {
	m := newMatcher(64, 5*time.Second)
	for _, q := range queues {
		m.backlog(q).reload(nil, false)
	}
	for _, e := range entries {
		m.putEntry(e.st.Queue, e)
	}
	return m
}

var nextRev int64 = 1000

func addWaiter(m *matcher, holder string, rec waitRecord) *waiting {
	nextRev++
	rec.Holder = holder
	key := waitKey(clientv3.LeaseID(nextRev), 1)
	m.addWaiter(key, nextRev, clientv3.LeaseID(nextRev), rec)
	return m.byKey[key]
}

func ids(as []assignment) map[string]string {
	out := map[string]string{}
	for _, a := range as {
		e, _ := parseReadyKey(a.e.key)
		out[a.w.rec.Holder] = e.ID
	}
	return out
}

func TestMatchFIFOWithinPriority(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("q", 0, 2, "", nil), testEntry("q", 5, 3, "", nil), testEntry("q", 0, 1, "", nil)}, "q")
	addWaiter(m, "a", waitRecord{Queues: []string{"q"}})
	addWaiter(m, "b", waitRecord{Queues: []string{"q"}})
	addWaiter(m, "c", waitRecord{Queues: []string{"q"}})
	got := ids(m.match(t0, 10))
	want := map[string]string{"a": "t003", "b": "t001", "c": "t002"} // priority 5 first, then submit order; oldest waiter first
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if more := m.match(t0, 10); len(more) != 0 {
		t.Fatalf("matched busy waiters again: %v", ids(more))
	}
}

func TestMatchQueueOrderOfTheCall(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("low", 9, 1, "", nil), testEntry("high", 0, 2, "", nil)}, "low", "high")
	addWaiter(m, "a", waitRecord{Queues: []string{"high", "low"}})
	if got := ids(m.match(t0, 10)); got["a"] != "t002" {
		t.Fatalf("got %v: the first queue that has a task wins, whatever the priority in others", got)
	}
}

func TestMatchRequireLabels(t *testing.T) {
	need := map[string]string{"model": "indextts2"}
	m := loadedMatcher([]entry{testEntry("q", 0, 1, "", need), testEntry("q", 0, 2, "", nil)}, "q")
	addWaiter(m, "plain", waitRecord{Queues: []string{"q"}})
	got := ids(m.match(t0, 10))
	if got["plain"] != "t002" {
		t.Fatalf("an unlabelled sidecar got %v; it must skip the task that requires model=indextts2", got)
	}
	addWaiter(m, "wrong", waitRecord{Queues: []string{"q"}, Labels: map[string]string{"model": "glm-tts"}})
	if got := ids(m.match(t0, 10)); len(got) != 0 {
		t.Fatalf("a sidecar with model=glm-tts got %v", got)
	}
	addWaiter(m, "right", waitRecord{Queues: []string{"q"}, Labels: map[string]string{"model": "indextts2", "gpu": "a100"}})
	if got := ids(m.match(t0, 10)); got["right"] != "t001" || len(got) != 1 {
		t.Fatalf("got %v, want t001 for the sidecar with model=indextts2", got)
	}
}

func TestMatchPausedQueue(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("q", 0, 1, "", nil)}, "q")
	m.setPaused("q", true)
	addWaiter(m, "a", waitRecord{Queues: []string{"q"}})
	if got := m.match(t0, 10); len(got) != 0 {
		t.Fatalf("paused queue handed out %v", ids(got))
	}
	m.setPaused("q", false)
	if got := ids(m.match(t0, 10)); got["a"] != "t001" {
		t.Fatalf("after resume got %v", got)
	}
}

func TestMatchAffinityHitFirst(t *testing.T) {
	m := loadedMatcher([]entry{
		testEntry("q", 0, 1, "spk-a", nil),
		testEntry("q", 0, 2, "spk-b", nil),
		testEntry("q", 0, 3, "spk-b", nil),
	}, "q")
	// The oldest waiter holds spk-b; the younger holds spk-a. Each gets
	// its own speaker, not the oldest task.
	addWaiter(m, "holds-b", waitRecord{Queues: []string{"q"}, Affinity: "spk-b"})
	addWaiter(m, "holds-a", waitRecord{Queues: []string{"q"}, Affinity: "spk-a"})
	got := ids(m.match(t0, 10))
	if got["holds-b"] != "t002" || got["holds-a"] != "t001" {
		t.Fatalf("got %v", got)
	}
}

func TestMatchAffinityLeavesOthersKeys(t *testing.T) {
	m := loadedMatcher([]entry{
		testEntry("q", 0, 1, "spk-a", nil),
		testEntry("q", 0, 2, "spk-c", nil),
	}, "q")
	// spk-a is held by a worker that is busy now; a new worker takes the
	// free speaker rather than the busy worker's.
	m.setOwner("busy/", "spk-a")
	addWaiter(m, "new", waitRecord{Queues: []string{"q"}})
	if got := ids(m.match(t0, 10)); got["new"] != "t002" {
		t.Fatalf("got %v, want the task of the speaker nobody holds", got)
	}
}

func TestMatchAffinityNeverIdlesAWorker(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("q", 0, 1, "spk-a", nil)}, "q")
	m.setOwner("busy/", "spk-a")
	addWaiter(m, "new", waitRecord{Queues: []string{"q"}, Affinity: "spk-z"})
	if got := ids(m.match(t0, 10)); got["new"] != "t001" {
		t.Fatalf("got %v: with only another's speaker left, a worker takes it rather than idle", got)
	}
}

func TestMatchAffinityWaitBoundsTheDelay(t *testing.T) {
	old := testEntry("q", 0, 1, "spk-a", nil)
	fresh := testEntry("q", 0, 2, "", nil)
	fresh.seen = t0.Add(10 * time.Second)
	m := loadedMatcher([]entry{old, fresh}, "q")
	m.setOwner("busy/", "spk-a")
	addWaiter(m, "new", waitRecord{Queues: []string{"q"}})
	if got := ids(m.match(t0.Add(time.Second), 10)); got["new"] != "t002" {
		t.Fatalf("within AffinityWait got %v, want the free task", got)
	}
	m = loadedMatcher([]entry{old, fresh}, "q")
	m.setOwner("busy/", "spk-a")
	addWaiter(m, "new", waitRecord{Queues: []string{"q"}})
	if got := ids(m.match(t0.Add(6*time.Second), 10)); got["new"] != "t001" {
		t.Fatalf("past AffinityWait got %v, want the oldest task", got)
	}
}

func TestMatchAffinityNeverTradesPriority(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("q", 0, 1, "spk-a", nil), testEntry("q", 9, 2, "spk-b", nil)}, "q")
	addWaiter(m, "holds-a", waitRecord{Queues: []string{"q"}, Affinity: "spk-a"})
	if got := ids(m.match(t0, 10)); got["holds-a"] != "t002" {
		t.Fatalf("got %v: the higher priority goes first even without a hit", got)
	}
}

func TestMatchLimitAndDone(t *testing.T) {
	m := loadedMatcher([]entry{testEntry("q", 0, 1, "", nil), testEntry("q", 0, 2, "", nil)}, "q")
	addWaiter(m, "a", waitRecord{Queues: []string{"q"}})
	addWaiter(m, "b", waitRecord{Queues: []string{"q"}})
	first := m.match(t0, 1)
	if len(first) != 1 {
		t.Fatalf("limit 1 gave %d", len(first))
	}
	// The entry went to someone else meanwhile: the waiter is matched
	// again with what is left.
	m.done(first[0], false, true, false)
	got := ids(m.match(t0, 10))
	if len(got) != 1 || got["a"] != "t002" {
		t.Fatalf("after a stale entry got %v", got)
	}
}

func TestMatchUnloadedBacklogAsksForALoad(t *testing.T) {
	m := newMatcher(64, time.Second)
	addWaiter(m, "a", waitRecord{Queues: []string{"q", "r"}})
	if qs := m.toLoad(); fmt.Sprint(qs) != "[q r]" {
		t.Fatalf("toLoad = %v", qs)
	}
	if qs := m.toLoad(); len(qs) != 0 {
		t.Fatalf("asked twice: %v", qs)
	}
	if got := m.match(t0, 10); len(got) != 0 {
		t.Fatalf("matched from an unloaded backlog: %v", ids(got))
	}
}

func TestBacklogHorizon(t *testing.T) {
	var b backlog
	b.reload([]entry{testEntry("q", 0, 1, "", nil), testEntry("q", 0, 5, "", nil)}, true)
	b.put(testEntry("q", 0, 9, "", nil), 4) // beyond the horizon: read later
	b.put(testEntry("q", 0, 3, "", nil), 4)
	if len(b.entries) != 3 || b.entries[1].st.Order != 3 {
		t.Fatalf("entries = %+v", b.entries)
	}
	e := testEntry("q", 0, 3, "", nil)
	b.removeStale(e.key, e.modRev+1) // a newer version is not removed
	if len(b.entries) != 3 {
		t.Fatalf("removeStale removed a newer entry")
	}
	b.remove(e.key)
	if len(b.entries) != 2 || !b.needsLoad(8) {
		t.Fatalf("after remove: %d entries, needsLoad %v", len(b.entries), b.needsLoad(8))
	}
}

func TestWaitKeyRoundTrip(t *testing.T) {
	k := waitKey(0x1234abcd, 42)
	l, s, err := parseWaitKey(k)
	if err != nil || l != 0x1234abcd || s != 42 {
		t.Fatalf("parse(%q) = %x %d %v", k, l, s, err)
	}
	for _, bad := range []string{"q/w/123/1", "q/w/00000000000000zz/1", "q/w/0000000000000001/x", "q/ready/x"} {
		if _, _, err := parseWaitKey(bad); err == nil {
			t.Fatalf("parse(%q) accepted", bad)
		}
	}
}
