package batoncli

import (
	"bufio"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"slices"
)

// idSet finds the lines of a file that repeat an earlier line's task id,
// in memory that does not grow with the file: it keeps a 128-bit hash of
// each id (two maphash sums with random seeds) with its line number, 24
// bytes a line, sorts them a run of runEntries at a time into an unlinked
// temporary file, and merges the runs when the file has been read. A file
// of up to runEntries lines never touches the disk. Two different ids with
// the same hash would be reported as a repeat; at 10M lines the chance is
// about 1e-25, and the seeds are random so no file can be built to make it
// happen. See docs/decisions.md, D-cli1 and D-cli2.
//
// Not safe for concurrent use. Close removes the runs.
type idSet struct {
	seeds [2]maphash.Seed
	buf   []idEntry
	runs  []*os.File
	max   int // entries kept in memory: runEntries
}

// runEntries is how many entries are sorted in memory at a time: 24 MiB.
// A variable for the tests.
var runEntries = 1 << 20

// idEntry is one line's id hash. On disk it is 20 bytes, little-endian.
type idEntry struct {
	h    [2]uint64
	line uint32
}

const idEntrySize = 20

func compareEntries(a, b idEntry) int {
	if c := cmp.Compare(a.h[0], b.h[0]); c != 0 {
		return c
	}
	if c := cmp.Compare(a.h[1], b.h[1]); c != 0 {
		return c
	}
	return cmp.Compare(a.line, b.line)
}

func newIDSet() *idSet {
	return &idSet{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, max: runEntries}
}

// add records that line has id. Lines are numbered from 1, at most 2³²-1.
func (s *idSet) add(id string, line int) error {
	if line <= 0 || line > 1<<32-1 {
		return fmt.Errorf("line %d: a file may have at most %d lines", line, uint32(1<<32-1))
	}
	if s.buf == nil {
		s.buf = make([]idEntry, 0, min(s.max, 4096))
	}
	s.buf = append(s.buf, idEntry{h: [2]uint64{maphash.String(s.seeds[0], id), maphash.String(s.seeds[1], id)}, line: uint32(line)})
	if len(s.buf) >= s.max {
		return s.spill()
	}
	return nil
}

// spill sorts the entries in memory and writes them to a run file of
// their own, created in os.TempDir and unlinked at once.
func (s *idSet) spill() error {
	slices.SortFunc(s.buf, compareEntries)
	f, err := os.CreateTemp("", "baton-submit-ids-*")
	if err != nil {
		return fmt.Errorf("keeping the ids' hashes: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("keeping the ids' hashes: %w", err)
	}
	s.runs = append(s.runs, f)
	w := bufio.NewWriterSize(f, 64<<10)
	var b [idEntrySize]byte
	for _, e := range s.buf {
		binary.LittleEndian.PutUint64(b[0:], e.h[0])
		binary.LittleEndian.PutUint64(b[8:], e.h[1])
		binary.LittleEndian.PutUint32(b[16:], e.line)
		w.Write(b[:]) // the error sticks; Flush returns it
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("keeping the ids' hashes: %w", err)
	}
	s.buf = s.buf[:0]
	return nil
}

// repeats calls fn for every line whose id an earlier line has, with that
// earlier line (the first line of the id), in no particular order. Call it
// once, after the last add.
func (s *idSet) repeats(fn func(line, first int)) error {
	slices.SortFunc(s.buf, compareEntries)
	// Merge the runs and the sorted entries still in memory (a file of
	// up to runEntries lines has no runs: then this is one pass over buf).
	h := &mergeHeap{}
	for _, f := range s.runs {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("reading the ids' hashes: %w", err)
		}
		c := &cursor{r: bufio.NewReaderSize(f, 64<<10)}
		if err := c.next(); err != nil {
			return err
		}
		if c.ok {
			heap.Push(h, c)
		}
	}
	if len(s.buf) > 0 {
		c := &cursor{mem: s.buf}
		if err := c.next(); err != nil {
			return err
		}
		heap.Push(h, c)
	}
	var group idEntry // the first entry of the current hash
	started := false
	for h.Len() > 0 {
		c := (*h)[0]
		e := c.cur
		if started && e.h == group.h {
			fn(int(e.line), int(group.line))
		} else {
			group, started = e, true
		}
		if err := c.next(); err != nil {
			return err
		}
		if c.ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

// Close removes the run files (unlinked already: closing frees them).
func (s *idSet) Close() error {
	var errs []error
	for _, f := range s.runs {
		errs = append(errs, f.Close())
	}
	s.runs, s.buf = nil, nil
	return errors.Join(errs...)
}

// cursor reads one sorted run, from a file or from memory.
type cursor struct {
	r   *bufio.Reader
	mem []idEntry
	cur idEntry
	ok  bool
}

func (c *cursor) next() error {
	if c.r == nil {
		c.ok = len(c.mem) > 0
		if c.ok {
			c.cur, c.mem = c.mem[0], c.mem[1:]
		}
		return nil
	}
	var b [idEntrySize]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			c.ok = false
			return nil
		}
		return fmt.Errorf("reading the ids' hashes: %w", err)
	}
	c.cur = idEntry{h: [2]uint64{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:])}, line: binary.LittleEndian.Uint32(b[16:])}
	c.ok = true
	return nil
}

// mergeHeap orders the cursors by their current entry.
type mergeHeap []*cursor

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return compareEntries(h[i].cur, h[j].cur) < 0 }
func (h mergeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)        { *h = append(*h, x.(*cursor)) }
func (h *mergeHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
