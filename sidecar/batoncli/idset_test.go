package batoncli

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/workqueue"
)

// repeatsOf returns what idSet reports for ids (line i+1 has ids[i]) with
// at most max entries in memory.
func repeatsOf(t *testing.T, ids []string, max int) map[int]int {
	t.Helper()
	s := newIDSet()
	s.max = max
	defer s.Close()
	for i, id := range ids {
		if err := s.add(id, i+1); err != nil {
			t.Fatal(err)
		}
	}
	got := map[int]int{}
	if err := s.repeats(func(line, first int) {
		if _, dup := got[line]; dup {
			t.Errorf("line %d reported twice", line)
		}
		got[line] = first
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// The repeats found with the hashes sorted in runs on disk are the ones a
// map of the ids finds, whether the runs are many, one, or none.
func TestIDSetFindsRepeatsAcrossRuns(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]string{
		"one id":   repeated("same", 50),
		"distinct": distinctIDs(200),
	}
	var mixed []string
	for range 500 {
		mixed = append(mixed, fmt.Sprintf("u%d", r.IntN(300))) // about 40% repeats
	}
	cases["mixed"] = mixed
	for name, ids := range cases {
		want := map[int]int{}
		first := map[string]int{}
		for i, id := range ids {
			if f, ok := first[id]; ok {
				want[i+1] = f
			} else {
				first[id] = i + 1
			}
		}
		for _, max := range []int{1, 7, 64, len(ids), 1 << 20} {
			if got := repeatsOf(t, ids, max); !maps.Equal(got, want) {
				t.Errorf("%s, %d in memory: %d repeats %v, want %d %v", name, max, len(got), got, len(want), want)
			}
		}
	}
}

func repeated(id string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = id
	}
	return out
}

func distinctIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("id-%d", i)
	}
	return out
}

// The runs live in unlinked files: nothing is left in the temporary
// directory while or after a file is checked.
func TestIDSetLeavesNoFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	s := newIDSet()
	s.max = 10
	for i := range 100 {
		if err := s.add(fmt.Sprint(i), i+1); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.runs) != 10 {
		t.Fatalf("%d runs, want 10", len(s.runs))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left in the temporary directory: %v", ents)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkFile with the ids sorted in runs on disk reports repeated ids as it
// does in memory: every repeat counted, the first shown in line order
// among the other bad lines, each with its id and the earlier line.
func TestCheckFileReportsRepeatsFromRuns(t *testing.T) {
	defer func(n int) { runEntries = n }(runEntries)
	runEntries = 16
	var lines []string
	for i := 1; i <= 100; i++ {
		switch {
		case i == 50:
			lines = append(lines, "not json")
		case i%10 == 0:
			lines = append(lines, fmt.Sprintf(`{"id":"u%d"}`, i/10)) // repeats line i/10
		default:
			lines = append(lines, fmt.Sprintf(`{"id":"u%d"}`, i))
		}
	}
	p := filepath.Join(t.TempDir(), "lines.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := openSubmitInput(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	store, err := workqueue.NewStore(nil, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := checkFile(in, &specBuilder{store: store, file: p, tmpl: workqueue.Spec{Queue: "q"}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Lines 10, 20, … 90 but 50 repeat an id (8; line 100 has u10, which
	// line 10 does not have), line 50 is not JSON.
	if fc.bad != 9 || fc.tasks != 91 {
		t.Fatalf("bad %d, tasks %d; want 9 and 91", fc.bad, fc.tasks)
	}
	want := []string{
		p + `:10: id "u1" is also the id of line 1`,
		p + `:20: id "u2" is also the id of line 2`,
		p + `:30: id "u3" is also the id of line 3`,
		p + `:40: id "u4" is also the id of line 4`,
	}
	if got := strings.Split(fc.shown.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("shown:\n%s\nwant:\n%s", fc.shown.Error(), strings.Join(want, "\n"))
	}
	// With more shown, the line that is not JSON takes its place in order.
	in2, err := openSubmitInput(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in2.Close()
	fc, err = checkFile(in2, &specBuilder{store: store, file: p, tmpl: workqueue.Spec{Queue: "q"}}, 6)
	if err != nil {
		t.Fatal(err)
	}
	if got := fc.shown[4].Error(); got != p+":50: not a JSON object" {
		t.Fatalf("fifth shown: %s", got)
	}
}
