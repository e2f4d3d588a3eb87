package workqueue

import (
	"math/rand/v2"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// window is a sidecar's in-memory copy of the head of one queue's ready
// index, kept current by the sidecar's watch. Claimers choose from it, so a
// claim costs one etcd transaction and no read, whatever the queue's depth.
//
// When the queue holds more than the window's size, only the entries up to
// horizon are kept; entries put beyond it are ignored until a refill reads
// the head again. All methods are called with the Dispatcher's mutex held.
type window struct {
	name     string
	loaded   bool          // a load has completed
	complete bool          // entries holds the whole ready index of the queue
	horizon  string        // when !complete: the last key held
	loading  bool          // a load is requested and not done
	ready    chan struct{} // closed when the first load completes
	entries  []entry
	waiters  []*waiter // FIFO of Next calls waiting on this queue
	spread   int       // how many head entries a claimer picks among
	calm     int       // claims without a conflict since the spread last changed
	// claimers are the leases seen on new claims from this queue, with
	// when they were last seen (see share).
	claimers map[clientv3.LeaseID]time.Time
}

type entry struct {
	key    string
	modRev int64
	st     Status
	hash   uint32    // keyHash(key), for share
	seen   time.Time // when this sidecar learnt of it, for fallbackDelay
}

func newEntry(key string, modRev int64, st Status, seen time.Time) entry {
	return entry{key: key, modRev: modRev, st: st, hash: keyHash(key), seen: seen}
}

// keyHash is FNV-1a of the key with murmur3's finalizer (FNV's low bits
// alone depend only on the parity of the bytes, so keys whose digits
// repeat would all fall into one share). Every sidecar computes the same.
func keyHash(key string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

func (w *window) find(key string) (int, bool) {
	i := sort.Search(len(w.entries), func(i int) bool { return w.entries[i].key >= key })
	return i, i < len(w.entries) && w.entries[i].key == key
}

// put adds or updates an entry seen by the watch.
func (w *window) put(e entry, size int) {
	if !w.loaded {
		return
	}
	if !w.complete && e.key > w.horizon {
		return
	}
	i, ok := w.find(e.key)
	if ok {
		w.entries[i] = e
		return
	}
	w.entries = append(w.entries, entry{})
	copy(w.entries[i+1:], w.entries[i:])
	w.entries[i] = e
	if len(w.entries) > 2*size {
		w.entries = w.entries[:size]
		w.horizon = w.entries[size-1].key
		w.complete = false
	}
}

// remove drops an entry that was deleted or claimed.
func (w *window) remove(key string) {
	if i, ok := w.find(key); ok {
		w.entries = append(w.entries[:i], w.entries[i+1:]...)
	}
}

// removeStale drops the entry of key only if it is still the version a
// claimer tried (modRev): the watch may have put a newer one meanwhile (a
// returned task goes back under the same key), which must stay.
func (w *window) removeStale(key string, modRev int64) {
	if i, ok := w.find(key); ok && w.entries[i].modRev == modRev {
		w.entries = append(w.entries[:i], w.entries[i+1:]...)
	}
}

// needsLoad reports whether the window should be read from etcd again.
func (w *window) needsLoad(size int) bool {
	return !w.loading && (!w.loaded || !w.complete && len(w.entries) < size/2)
}

// share is the part of a queue a sidecar prefers to claim from: the
// entries whose key hashes to rank modulo n, where n is the number of
// sidecars seen claiming from the queue lately and rank this sidecar's
// place among them. Sidecars that agree on the membership never race for
// an entry; while they disagree (one started or stopped claiming) they
// race as if there were no shares. The zero value prefers every entry.
type share struct{ rank, n int }

func (s share) mine(e *entry) bool {
	return s.n <= 1 || int(e.hash%uint32(s.n)) == s.rank
}

// turn is how many sidecars come before this one for entry e: 0 for its
// own entries, then 1 for the entries of the share ranked just below, and
// so on, so that the others' entries are taken over in an agreed order.
func (s share) turn(e *entry) int {
	if s.n <= 1 {
		return 0
	}
	return (s.rank - int(e.hash%uint32(s.n)) + s.n) % s.n
}

const (
	// claimerTTL is how long after its last new claim from a queue a
	// sidecar still counts as claiming from it.
	claimerTTL = 5 * time.Second
	// fallbackDelay is how long a sidecar waits for each sidecar before it
	// in turn (see share.turn) before it takes an entry of another's
	// share: long enough for an owner with an idle worker to claim the
	// entry first (and for the watch to say so), so that one new task
	// does not set one claimer per sidecar racing for it.
	fallbackDelay = 10 * time.Millisecond
)

// claimed records a new claim from the queue under lease.
func (w *window) claimed(lease clientv3.LeaseID, now time.Time) {
	if w.claimers == nil {
		w.claimers = make(map[clientv3.LeaseID]time.Time)
	}
	w.claimers[lease] = now
}

// share returns the share of the sidecar holding lease own: its place
// among the leases seen claiming within claimerTTL, its own included.
func (w *window) share(own clientv3.LeaseID, now time.Time) share {
	cutoff := now.Add(-claimerTTL)
	rank, n := 0, 1
	for l, seen := range w.claimers {
		switch {
		case seen.Before(cutoff):
			delete(w.claimers, l)
		case l < own:
			rank++
			n++
		case l > own:
			n++
		}
	}
	return share{rank: rank, n: n}
}

// pick chooses an entry to claim among the first spread entries of the
// highest priority present that no local claimer is trying already,
// preferring the entries of this sidecar's share. Only when the share has
// none free does it choose among the others', and only among those known
// for fallbackDelay times its turn, unless the caller will not wait that
// long (its deadline comes first). When it finds nothing but entries of
// others' shares too new to take, ripen says when the first becomes
// eligible.
func (w *window) pick(trying map[string]bool, sh share, now, deadline time.Time) (e entry, ok bool, ripen time.Time) {
	var mine, others []int
	var prio int32
	spread := max(w.spread, 1)
	for i := range w.entries {
		e := &w.entries[i]
		if trying[e.key] {
			continue
		}
		if len(mine)+len(others) == 0 && ripen.IsZero() {
			prio = e.st.Priority
		} else if e.st.Priority != prio || len(mine) >= spread {
			break
		}
		switch at := e.seen.Add(time.Duration(sh.turn(e)) * fallbackDelay); {
		case sh.mine(e):
			mine = append(mine, i)
		case len(others) >= spread:
		case !at.After(now) || deadline.Before(at):
			others = append(others, i)
		case ripen.IsZero() || at.Before(ripen):
			ripen = at
		}
	}
	cands := mine
	if len(cands) == 0 {
		cands = others
	}
	if len(cands) == 0 {
		return entry{}, false, ripen
	}
	return w.entries[cands[rand.IntN(len(cands))]], true, time.Time{}
}

// conflicted widens the spread after a lost race; succeeded narrows it
// again after a run of uncontended claims, so that FIFO order is as strict
// as the contention allows: with one sidecar (whose claimers never race,
// see Dispatcher.trying) it stays 1 and the queue is handed out in order.
func (w *window) conflicted(size int) {
	w.spread = min(max(w.spread*2, 2), size)
	w.calm = 0
}

func (w *window) succeeded() {
	if w.calm++; w.calm >= calmClaims && w.spread > minSpread {
		w.spread--
		w.calm = 0
	}
}

const (
	minSpread  = 1
	calmClaims = 8 // uncontended claims before the spread narrows by one
)

// waiter is one Next call waiting for work on one or more queues.
type waiter struct {
	ch     chan struct{} // buffered 1: a wake-up
	fired  string        // the queue whose wake-up it took, "" if none
	queues []string
}

// wake signals the first waiter of the queue that has not been woken yet.
func (w *window) wake() bool {
	for len(w.waiters) > 0 {
		wt := w.waiters[0]
		w.waiters = w.waiters[1:]
		if wt.fired != "" {
			continue
		}
		wt.fired = w.name
		wt.ch <- struct{}{}
		return true
	}
	return false
}

func (w *window) wakeAll() {
	for w.wake() {
	}
}

func (w *window) unwait(wt *waiter) {
	for i, x := range w.waiters {
		if x == wt {
			w.waiters = append(w.waiters[:i], w.waiters[i+1:]...)
			return
		}
	}
}
