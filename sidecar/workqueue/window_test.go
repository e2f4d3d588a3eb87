package workqueue

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Regression: a claimer's conflict on an old version of a ready entry must
// not drop the newer version the watch put meanwhile under the same key (a
// returned task keeps its key); the queue then looked empty to this
// sidecar until something else refilled its window.
func TestConflictKeepsNewerEntry(t *testing.T) {
	w := &window{loaded: true, complete: true}
	const key = "q/ready/tts/1000/0000000000000000001/a"
	w.put(entry{key: key, modRev: 5}, 64)
	w.put(entry{key: key, modRev: 9}, 64) // deleted and put again since
	w.removeStale(key, 5)                 // the claim of version 5 conflicted
	if i, ok := w.find(key); !ok || w.entries[i].modRev != 9 {
		t.Fatalf("entries %+v; want the version of mod revision 9 kept", w.entries)
	}
	w.removeStale(key, 9)
	if _, ok := w.find(key); ok {
		t.Fatal("the tried version was not removed")
	}
}

// longAgo is when entries were seen that any sidecar may take at once.
var longAgo = time.Now().Add(-time.Hour)

// shareWindow returns a loaded window of n entries of one priority, in
// order, seen long ago, and which of them are in share sh.
func shareWindow(n int, sh share) (*window, map[string]bool) {
	w := &window{loaded: true, complete: true, spread: n}
	mine := map[string]bool{}
	for i := range n {
		e := newEntry(readyKey("tts", 0, int64(i+1), fmt.Sprintf("t%d", i)), int64(i+1), Status{}, longAgo)
		w.put(e, 64)
		mine[e.key] = sh.mine(&e)
	}
	return w, mine
}

// A claimer picks from its own share while it has a free entry there, and
// from the others' only when it has none.
func TestPickPrefersShare(t *testing.T) {
	sh := share{rank: 1, n: 3}
	w, mine := shareWindow(12, sh)
	trying := map[string]bool{}
	var own int
	for _, m := range mine {
		if m {
			own++
		}
	}
	if own == 0 || own == len(mine) {
		t.Fatalf("%d of %d entries in the share; the test needs some of each", own, len(mine))
	}
	now := time.Now()
	later := now.Add(time.Minute)
	for range own {
		e, ok, _ := w.pick(trying, sh, now, later)
		if !ok || !mine[e.key] {
			t.Fatalf("picked %q (mine %v) while own entries were free", e.key, mine[e.key])
		}
		trying[e.key] = true
	}
	e, ok, _ := w.pick(trying, sh, now, later)
	if !ok || mine[e.key] {
		t.Fatalf("picked %q, %v; want another share's entry once the own are taken", e.key, ok)
	}
	// The zero share prefers everything.
	if _, ok, _ := w.pick(map[string]bool{}, share{}, now, later); !ok {
		t.Fatal("zero share picked nothing")
	}
}

// Another share's entry is taken only once it has been known for
// fallbackDelay (its owner gets the first chance), unless the caller will
// not wait that long.
func TestPickWaitsBeforeOthersShare(t *testing.T) {
	sh := share{rank: 0, n: 2}
	now := time.Now()
	w := &window{loaded: true, complete: true, spread: 1}
	var theirs entry
	for i := range 64 {
		e := newEntry(readyKey("tts", 0, int64(i), fmt.Sprintf("n%d", i)), 1, Status{}, now)
		if !sh.mine(&e) {
			theirs = e
			break
		}
	}
	if theirs.key == "" {
		t.Fatal("64 keys in a row hash into one share of two")
	}
	w.put(theirs, 64)
	later := now.Add(time.Minute)
	if _, ok, ripen := w.pick(map[string]bool{}, sh, now, later); ok || !ripen.Equal(now.Add(fallbackDelay)) {
		t.Fatalf("picked a new entry of another share (ok %v), ripen %v; want nothing until %v", ok, ripen, now.Add(fallbackDelay))
	}
	if e, ok, _ := w.pick(map[string]bool{}, sh, now.Add(fallbackDelay), later); !ok || e.key != theirs.key {
		t.Fatal("another share's entry not taken after fallbackDelay")
	}
	// With more sidecars the others take over in turn.
	for _, sh := range []share{{rank: 0, n: 3}, {rank: 1, n: 3}, {rank: 2, n: 3}} {
		wait := time.Duration(sh.turn(&theirs)) * fallbackDelay
		if _, ok, _ := w.pick(map[string]bool{}, sh, now.Add(wait-time.Millisecond), later); ok && wait > 0 {
			t.Errorf("rank %d took the entry before its turn (%v)", sh.rank, wait)
		}
		if _, ok, _ := w.pick(map[string]bool{}, sh, now.Add(wait), later); !ok {
			t.Errorf("rank %d did not take the entry at its turn (%v)", sh.rank, wait)
		}
	}
	// Next with no wait takes it at once.
	if e, ok, _ := w.pick(map[string]bool{}, sh, now, now); !ok || e.key != theirs.key {
		t.Fatal("a caller that will not wait did not get another share's entry")
	}
}

// The share never beats priority: an entry of the highest priority
// present is picked even when all of the share's are of lower priority.
func TestPickShareKeepsPriority(t *testing.T) {
	sh := share{rank: 0, n: 2}
	w := &window{loaded: true, complete: true, spread: 8}
	var high entry
	for i := range 64 {
		e := newEntry(readyKey("tts", 5, int64(i), fmt.Sprintf("h%d", i)), 1, Status{Priority: 5}, longAgo)
		if !sh.mine(&e) {
			high = e
			break
		}
	}
	if high.key == "" {
		t.Fatal("64 keys in a row hash into one share of two")
	}
	w.put(high, 64)
	for i := range 8 {
		e := newEntry(readyKey("tts", 0, int64(i), fmt.Sprintf("l%d", i)), 1, Status{}, longAgo)
		w.put(e, 64)
	}
	now := time.Now()
	if e, ok, _ := w.pick(map[string]bool{}, sh, now, now.Add(time.Minute)); !ok || e.key != high.key {
		t.Fatalf("picked %q; want the only entry of the highest priority, %q", e.key, high.key)
	}
}

func TestShareFromClaimers(t *testing.T) {
	now := time.Now()
	w := &window{}
	for l, at := range map[clientv3.LeaseID]time.Time{5: now, 9: now.Add(-time.Second), 2: now.Add(-2 * claimerTTL), 7: now} {
		w.claimed(l, at)
	}
	if sh := w.share(7, now); sh != (share{rank: 1, n: 3}) {
		t.Fatalf("share %+v; want rank 1 of 3 (leases 5, 7, 9; 2 is too old)", sh)
	}
	if _, ok := w.claimers[2]; ok {
		t.Fatal("a lease not seen for longer than claimerTTL was kept")
	}
	// A sidecar nobody has seen claim yet counts itself.
	if sh := (&window{}).share(3, now); sh != (share{rank: 0, n: 1}) {
		t.Fatalf("share %+v; want the whole queue", sh)
	}
}

// Keys spread evenly over the shares, also for small and even n.
func TestShareSpread(t *testing.T) {
	for _, n := range []int{2, 3, 4, 8} {
		count := make([]int, n)
		const keys = 4000
		for i := range keys {
			e := newEntry(readyKey("tts", 0, 1_700_000_000_000_000_000+int64(i), fmt.Sprintf("utt_%d", i)), 1, Status{}, longAgo)
			count[e.hash%uint32(n)]++
		}
		for r, c := range count {
			if c < keys/n*8/10 || c > keys/n*12/10 {
				t.Errorf("n=%d: share %d has %d of %d keys", n, r, c, keys)
			}
		}
	}
}

// Every sidecar has its own turn for an entry: the order is agreed.
func TestShareTurns(t *testing.T) {
	for i := range 50 {
		e := newEntry(readyKey("tts", 0, int64(i), fmt.Sprintf("x%d", i)), 1, Status{}, longAgo)
		const n = 5
		seen := map[int]bool{}
		for r := range n {
			sh := share{rank: r, n: n}
			turn := sh.turn(&e)
			if (turn == 0) != sh.mine(&e) || seen[turn] {
				t.Fatalf("entry %d: rank %d has turn %d (mine %v, turns so far %v)", i, r, turn, sh.mine(&e), seen)
			}
			seen[turn] = true
		}
	}
}
