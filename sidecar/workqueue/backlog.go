package workqueue

import (
	"sort"
	"time"
)

// backlog is the scheduler's in-memory copy of the head of one queue's
// ready index, kept current by the scheduler's watch. The matcher chooses
// from it, so an assignment costs one etcd transaction and no read,
// whatever the queue's depth.
//
// When the queue holds more than the backlog's size, only the entries up
// to horizon are kept; entries put beyond it are ignored until a refill
// reads the head again. A backlog is owned by the scheduler's loop
// goroutine; nothing here locks.
type backlog struct {
	loaded   bool   // a load has completed
	complete bool   // entries holds the whole ready index of the queue
	horizon  string // when !complete: the last key held
	loading  bool   // a load is requested and not done
	// extend asks the next load for the page past the horizon: a waiter
	// found nothing it may take among the entries held (their required
	// labels are others'), and the queue holds more.
	extend  bool
	limit   int // entries kept: Config.Window, more after extensions
	entries []entry
}

// maxExtend bounds how far past Config.Window a backlog grows to find
// entries a waiter may take: limit stays under maxExtend*Window.
const maxExtend = 16

// entry is one ready entry: a task PENDING and due.
type entry struct {
	key    string
	modRev int64
	st     Status
	seen   time.Time // when the scheduler learnt of it, for Config.AffinityWait
}

func (b *backlog) find(key string) (int, bool) {
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].key >= key })
	return i, i < len(b.entries) && b.entries[i].key == key
}

// put adds or updates an entry seen by the watch. An entry known before
// keeps the time it was first seen.
func (b *backlog) put(e entry, size int) {
	b.limit = max(b.limit, size)
	if !b.loaded {
		return
	}
	if !b.complete && e.key > b.horizon {
		return
	}
	i, ok := b.find(e.key)
	if ok {
		e.seen = b.entries[i].seen
		b.entries[i] = e
		return
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = e
	if len(b.entries) > 2*b.limit {
		b.entries = b.entries[:b.limit]
		b.horizon = b.entries[b.limit-1].key
		b.complete = false
	}
}

// remove drops an entry that was deleted or claimed.
func (b *backlog) remove(key string) {
	if i, ok := b.find(key); ok {
		b.entries = append(b.entries[:i], b.entries[i+1:]...)
	}
}

// removeStale drops the entry of key only if it is still the version an
// assignment tried (modRev): the watch may have put a newer one meanwhile
// (a returned task goes back under the same key), which must stay.
func (b *backlog) removeStale(key string, modRev int64) {
	if i, ok := b.find(key); ok && b.entries[i].modRev == modRev {
		b.entries = append(b.entries[:i], b.entries[i+1:]...)
	}
}

// needsLoad reports whether the backlog should be read from etcd again:
// never loaded, asked to extend, or drained below half of what it keeps
// while the queue holds more.
func (b *backlog) needsLoad(size int) bool {
	limit := max(b.limit, size)
	return !b.loading && (!b.loaded || b.extend || !b.complete && len(b.entries) < max(limit/2, 1))
}

// starved records that a waiter found no entry it may take here. If the
// queue holds more than the backlog and the backlog may still grow, the
// next load reads the next page.
func (b *backlog) starved(size int) {
	if b.loaded && !b.complete && !b.loading && max(b.limit, size) < maxExtend*size {
		b.extend = true
	}
}

// extended appends the page read past the horizon; more says whether the
// queue holds more still.
func (b *backlog) extended(page []entry, more bool, size int) {
	b.loading, b.extend = false, false
	b.limit = max(b.limit, size) + size
	for _, e := range page {
		if e.key > b.horizon {
			b.entries = append(b.entries, e)
		}
	}
	b.complete = !more
	if len(b.entries) > 0 {
		b.horizon = b.entries[len(b.entries)-1].key
	}
}

// reload replaces the entries with a fresh read of the head of the queue;
// more says whether the queue holds more than was read.
func (b *backlog) reload(entries []entry, more bool) {
	b.extend = false
	for i := range entries {
		if j, ok := b.find(entries[i].key); ok && b.entries[j].modRev == entries[i].modRev {
			entries[i].seen = b.entries[j].seen
		}
	}
	b.entries, b.loaded, b.loading = entries, true, false
	b.complete = !more
	if b.complete {
		b.limit = 0 // all of it is here: extensions are over
	}
	b.horizon = ""
	if len(entries) > 0 {
		b.horizon = entries[len(entries)-1].key
	}
}
