package batoncli

import "hash/maphash"

// idSet finds two lines of a file with one task id while the file is
// checked, without keeping the ids: it keeps a 128-bit hash of each id
// (two maphash sums with random seeds) and the line that had it. That is
// about 56 bytes per line whatever the length of the ids (measured with
// 1M ids; keeping the ids themselves took 72 bytes for 11-byte ids and
// grows with them, up to ~190 bytes for 128-byte ids). Two different ids
// with the same hash would be reported as a duplicate; at 1M lines the
// chance is about 1e-27, and the seeds are random so no file can be built
// to make it happen. See docs/decisions.md, D-cli1.
//
// Not safe for concurrent use.
type idSet struct {
	seeds [2]maphash.Seed
	lines map[[2]uint64]int
}

func newIDSet() *idSet {
	return &idSet{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, lines: map[[2]uint64]int{}}
}

// add records that line has id and returns the earlier line with the
// same id, or 0.
func (s *idSet) add(id string, line int) int {
	k := [2]uint64{maphash.String(s.seeds[0], id), maphash.String(s.seeds[1], id)}
	if first, ok := s.lines[k]; ok {
		return first
	}
	s.lines[k] = line
	return 0
}
