package jsonl

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// readAll scans in to its end and returns the good records and the bad
// lines; a read error fails the test.
func readAll(t testing.TB, in io.Reader, file string) ([]Record, Errors) {
	t.Helper()
	s := NewScanner(in, file)
	var recs []Record
	var bad Errors
	for {
		rec, err := s.Next()
		var le *LineError
		switch {
		case errors.Is(err, io.EOF):
			return recs, bad
		case errors.As(err, &le):
			bad = append(bad, le)
		case err != nil:
			t.Fatalf("read error: %v", err)
		default:
			recs = append(recs, rec)
		}
	}
}

func TestScanner(t *testing.T) {
	in := "{\"uttid\": \"a\", \"syn_text\": \"hi\"}\n\n  \n{\"uttid\":\"b\"}\r\n{\"uttid\":\"c\"}"
	recs, bad := readAll(t, strings.NewReader(in), "f.jsonl")
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	if len(recs) != 3 || recs[0].Line != 1 || recs[1].Line != 4 || recs[2].Line != 5 {
		t.Fatalf("recs = %+v", recs)
	}
	if string(recs[0].Payload) != `{"uttid":"a","syn_text":"hi"}` {
		t.Fatalf("payload not compacted: %s", recs[0].Payload)
	}
}

func TestScannerReportsEveryBadLine(t *testing.T) {
	in := "{\"a\":1}\nnot json\n[1,2]\n{\"a\":\n{\"ok\":true}\n"
	recs, bad := readAll(t, strings.NewReader(in), "batch.jsonl")
	var lines []int
	for _, e := range bad {
		lines = append(lines, e.Line)
		if !strings.HasPrefix(e.Error(), "batch.jsonl:") {
			t.Errorf("message %q does not start with FILE:LINE", e.Error())
		}
	}
	if len(lines) != 3 || lines[0] != 2 || lines[1] != 3 || lines[2] != 4 {
		t.Fatalf("bad lines = %v, want [2 3 4]", lines)
	}
	if len(recs) != 2 {
		t.Fatalf("good records = %d, want 2", len(recs))
	}
}

func TestScannerLongLine(t *testing.T) {
	in := "{\"a\":\"" + strings.Repeat("x", MaxLine+10) + "\"}\n{\"b\":1}\n"
	recs, bad := readAll(t, strings.NewReader(in), "f")
	if len(bad) != 1 || bad[0].Line != 1 || !strings.Contains(bad[0].Error(), "f:1: line is longer than 4194304 bytes") {
		t.Fatalf("bad = %v", bad)
	}
	if len(recs) != 1 || recs[0].Line != 2 {
		t.Fatalf("recs = %+v", recs)
	}
}

// endless is an input without a newline that never ends, like /dev/zero.
type endless struct{ read int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.read += int64(len(p))
	return len(p), nil
}

// A line that never ends is read in bounded memory: the scanner holds at
// most MaxLine bytes of it: what it allocates (about 5 × MaxLine as the
// line grows to the cap) stays far below what it read.
func TestScannerEndlessLineBoundedMemory(t *testing.T) {
	src := &endless{}
	s := NewScanner(io.LimitReader(src, 16*MaxLine), "f")
	before := allocated()
	_, err := s.Next()
	grew := allocated() - before
	var le *LineError
	if !errors.As(err, &le) || le.Line != 1 {
		t.Fatalf("err = %v, want line 1 too long", err)
	}
	if src.read != 16*MaxLine {
		t.Fatalf("read %d bytes, want the whole line (%d)", src.read, 16*MaxLine)
	}
	if grew > 6*MaxLine {
		t.Fatalf("allocated %d bytes for a %d-byte line; want at most %d", grew, 16*MaxLine, 6*MaxLine)
	}
}

// A read error ends the scan, naming the file and the line.
func TestScannerReadError(t *testing.T) {
	boom := errors.New("boom")
	s := NewScanner(io.MultiReader(strings.NewReader("{\"a\":1}\n"), errReader{boom}), "f")
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Next()
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "f:2: ") {
		t.Fatalf("err = %v, want f:2: boom", err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the error: %v, want EOF", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func FuzzRead(f *testing.F) {
	f.Add("{\"uttid\":\"a\"}\n{}\n")
	f.Add("x\n\n{")
	f.Fuzz(func(t *testing.T, in string) {
		recs, bad := readAll(t, strings.NewReader(in), "f")
		nLines := strings.Count(in, "\n") + 1
		for _, r := range recs {
			if r.Line < 1 || r.Line > nLines {
				t.Fatalf("line %d out of range", r.Line)
			}
			if len(r.Payload) == 0 || r.Payload[0] != '{' {
				t.Fatalf("payload %q is not an object", r.Payload)
			}
		}
		for _, e := range bad {
			if e.Line < 1 || e.Line > nLines {
				t.Fatalf("bad line %d out of range", e.Line)
			}
		}
	})
}

// allocated returns the bytes the process has allocated so far.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}
