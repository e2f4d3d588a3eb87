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
	entries  []entry
}

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
	if len(b.entries) > 2*size {
		b.entries = b.entries[:size]
		b.horizon = b.entries[size-1].key
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

// needsLoad reports whether the backlog should be read from etcd again.
func (b *backlog) needsLoad(size int) bool {
	return !b.loading && (!b.loaded || !b.complete && len(b.entries) < size/2)
}

// loaded replaces the entries with a fresh read of the head of the queue;
// more says whether the queue holds more than was read.
func (b *backlog) reload(entries []entry, more bool) {
	for i := range entries {
		if j, ok := b.find(entries[i].key); ok && b.entries[j].modRev == entries[i].modRev {
			entries[i].seen = b.entries[j].seen
		}
	}
	b.entries, b.loaded, b.loading = entries, true, false
	b.complete = !more
	b.horizon = ""
	if len(entries) > 0 {
		b.horizon = entries[len(entries)-1].key
	}
}
