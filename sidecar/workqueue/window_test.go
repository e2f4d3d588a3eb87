package workqueue

import "testing"

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
