package workqueue

import (
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// matcher pairs waiting Next calls (the fleet's wait keys) with ready
// entries. It is the scheduler's decision logic: no I/O, the time passed
// in, owned by the scheduler's loop goroutine (nothing here locks).
//
// Rules, in order:
//   - a waiter takes from the first of its queues that has an entry it
//     may take (not paused, its labels satisfy the entry's Require);
//   - within that queue, only entries of the highest priority present
//     are considered (priority is never traded for affinity);
//   - among them, an entry whose affinity key is the waiter's last one
//     (a hit: the GPU has that speaker's conditioning cached) first, then
//     the oldest entry whose key no other worker holds, then the oldest;
//   - but an entry that has waited AffinityWait since the scheduler saw
//     it is taken first, so affinity delays a task by at most that much
//     and never leaves a worker idle while it could work;
//   - waiters are served oldest first, those with a hit before the others.
type matcher struct {
	size         int           // backlog size (Config.Window)
	affinityWait time.Duration // Config.AffinityWait

	backlogs map[string]*backlog
	waiters  []*waiting // oldest registration first
	byKey    map[string]*waiting
	paused   map[string]bool
	busy     map[string]bool // ready keys with an assignment in flight

	// Who holds which affinity key: the worker (holder and session) that
	// was last handed it. A hint, bounded by maxOwners.
	ownerOf map[string]string // affinity key → worker
	keyOf   map[string]string // worker → affinity key
	dirty   bool              // something changed since the last match
}

// maxOwners bounds the affinity table; past it the table starts afresh.
const maxOwners = 1 << 16

// waiting is one wait key: a Next call waiting for a task.
type waiting struct {
	key    string
	modRev int64
	lease  clientv3.LeaseID
	rec    waitRecord
	busy   bool // an assignment to it is in flight
}

func (w *waiting) worker() string { return w.rec.Holder + "/" + w.rec.Session }

// assignment is a decision of the matcher: entry e to waiter w.
type assignment struct {
	w *waiting
	e entry
}

func newMatcher(size int, affinityWait time.Duration) *matcher {
	return &matcher{
		size: size, affinityWait: affinityWait,
		backlogs: make(map[string]*backlog),
		byKey:    make(map[string]*waiting),
		paused:   make(map[string]bool),
		busy:     make(map[string]bool),
		ownerOf:  make(map[string]string),
		keyOf:    make(map[string]string),
	}
}

// addWaiter records a wait key put at modRev.
func (m *matcher) addWaiter(key string, modRev int64, lease clientv3.LeaseID, rec waitRecord) {
	if w := m.byKey[key]; w != nil {
		w.modRev, w.rec = modRev, rec
		m.dirty = true
		return
	}
	w := &waiting{key: key, modRev: modRev, lease: lease, rec: rec}
	m.byKey[key] = w
	m.waiters = append(m.waiters, w)
	if n := len(m.waiters); n > 1 && m.waiters[n-2].modRev > modRev {
		sort.SliceStable(m.waiters, func(i, j int) bool { return m.waiters[i].modRev < m.waiters[j].modRev })
	}
	if rec.Affinity != "" {
		m.setOwner(w.worker(), rec.Affinity)
	}
	m.dirty = true
}

// removeWaiter forgets a wait key (assigned, withdrawn or gone with its
// lease).
func (m *matcher) removeWaiter(key string) {
	w := m.byKey[key]
	if w == nil {
		return
	}
	delete(m.byKey, key)
	for i, x := range m.waiters {
		if x == w {
			m.waiters = append(m.waiters[:i], m.waiters[i+1:]...)
			break
		}
	}
}

// backlog returns the backlog of queue q, creating it unloaded.
func (m *matcher) backlog(q string) *backlog {
	b := m.backlogs[q]
	if b == nil {
		b = &backlog{}
		m.backlogs[q] = b
	}
	return b
}

// putEntry records a ready entry seen by the watch.
func (m *matcher) putEntry(q string, e entry) {
	if b := m.backlogs[q]; b != nil {
		b.put(e, m.size)
		m.dirty = true
	}
}

// removeEntry forgets a ready entry that was deleted.
func (m *matcher) removeEntry(q, key string) {
	if b := m.backlogs[q]; b != nil {
		b.remove(key)
	}
}

func (m *matcher) setPaused(q string, paused bool) {
	if paused {
		m.paused[q] = true
		return
	}
	delete(m.paused, q)
	m.dirty = true
}

// toLoad returns the queues some waiter waits on whose backlog must be
// read from etcd (a first load, a refill, or the page past the horizon
// when backlog.extend is set), marking them as loading.
func (m *matcher) toLoad() []string {
	var qs []string
	for _, w := range m.waiters {
		for _, q := range w.rec.Queues {
			if b := m.backlog(q); b.needsLoad(m.size) {
				b.loading = true
				qs = append(qs, q)
			}
		}
	}
	return qs
}

// extending reports whether a waiter found nothing it may take in a
// backlog that is to read its next page (backlog.starved): the scheduler
// loads it before it waits for the watch, since no event may come.
func (m *matcher) extending() bool {
	for _, w := range m.waiters {
		for _, q := range w.rec.Queues {
			if b := m.backlogs[q]; b != nil && b.extend && b.needsLoad(m.size) {
				return true // toLoad returns it
			}
		}
	}
	return false
}

// setOwner records that worker was handed affinity key k.
func (m *matcher) setOwner(worker, k string) {
	if old, ok := m.keyOf[worker]; ok && old != k && m.ownerOf[old] == worker {
		delete(m.ownerOf, old)
	}
	if len(m.keyOf) >= maxOwners {
		clear(m.keyOf)
		clear(m.ownerOf)
	}
	m.keyOf[worker] = k
	m.ownerOf[k] = worker
}

// match returns up to limit new assignments, marking their waiters and
// entries busy until done is called for each.
func (m *matcher) match(now time.Time, limit int) []assignment {
	if !m.dirty || limit <= 0 {
		return nil
	}
	m.dirty = false
	var out []assignment
	for _, hitsOnly := range []bool{true, false} {
		for _, w := range m.waiters {
			if len(out) >= limit {
				m.dirty = true // come back for the rest
				return out
			}
			if w.busy || hitsOnly && w.rec.Affinity == "" {
				continue
			}
			e, ok := m.pick(w, now, hitsOnly)
			if !ok {
				continue
			}
			w.busy = true
			m.busy[e.key] = true
			out = append(out, assignment{w: w, e: e})
		}
	}
	return out
}

// pick chooses the entry for waiter w (see the rules on matcher). With
// hitsOnly it returns only an entry with w's affinity key.
func (m *matcher) pick(w *waiting, now time.Time, hitsOnly bool) (entry, bool) {
	for _, q := range w.rec.Queues {
		b := m.backlogs[q]
		if m.paused[q] || b == nil || !b.loaded {
			continue
		}
		var head, free *entry
		for i := range b.entries {
			e := &b.entries[i]
			if m.busy[e.key] || !LabelsMatch(e.st.Require, w.rec.Labels) {
				continue
			}
			if head == nil {
				head = e
			} else if e.st.Priority != head.st.Priority {
				break
			}
			if w.rec.Affinity != "" && e.st.Affinity == w.rec.Affinity {
				return *e, true
			}
			if free == nil && (e.st.Affinity == "" || m.ownerOf[e.st.Affinity] == "" || m.ownerOf[e.st.Affinity] == w.worker()) {
				free = e
				if w.rec.Affinity == "" {
					break // no hit to look for
				}
			}
		}
		switch {
		case head == nil:
			b.starved(m.size) // nothing held here for w: look further, meanwhile its next queue
			continue
		case hitsOnly:
			return entry{}, false
		case free == nil || now.Sub(head.seen) >= m.affinityWait:
			return *head, true
		default:
			return *free, true
		}
	}
	return entry{}, false
}

// done ends an assignment: on success the waiter and entry are gone and
// the waiter's worker holds the entry's affinity key; otherwise both may
// be matched again, unless stale says which is gone.
func (m *matcher) done(a assignment, ok bool, staleEntry, staleWaiter bool) {
	delete(m.busy, a.e.key)
	a.w.busy = false
	m.dirty = true
	q := a.e.st.Queue
	switch {
	case ok:
		m.removeWaiter(a.w.key)
		if b := m.backlogs[q]; b != nil {
			b.removeStale(a.e.key, a.e.modRev)
		}
		if a.e.st.Affinity != "" {
			m.setOwner(a.w.worker(), a.e.st.Affinity)
		}
		return
	case staleEntry:
		if b := m.backlogs[q]; b != nil {
			b.removeStale(a.e.key, a.e.modRev)
		}
	}
	if staleWaiter {
		m.removeWaiter(a.w.key)
	}
}

// prune drops the backlogs no waiter waits on while there are more than
// max, so that queue names asked for once do not stay in memory.
func (m *matcher) prune(max int) {
	if len(m.backlogs) <= max {
		return
	}
	used := make(map[string]bool)
	for _, w := range m.waiters {
		for _, q := range w.rec.Queues {
			used[q] = true
		}
	}
	for q, b := range m.backlogs {
		if !used[q] && !b.loading {
			delete(m.backlogs, q)
		}
	}
}
