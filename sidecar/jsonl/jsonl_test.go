package jsonl

import (
	"errors"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	in := "{\"uttid\": \"a\", \"syn_text\": \"hi\"}\n\n  \n{\"uttid\":\"b\"}\r\n{\"uttid\":\"c\"}"
	recs, err := Read(strings.NewReader(in), "f.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Line != 1 || recs[1].Line != 4 || recs[2].Line != 5 {
		t.Fatalf("recs = %+v", recs)
	}
	if string(recs[0].Payload) != `{"uttid":"a","syn_text":"hi"}` {
		t.Fatalf("payload not compacted: %s", recs[0].Payload)
	}
}

func TestReadReportsEveryBadLine(t *testing.T) {
	in := "{\"a\":1}\nnot json\n[1,2]\n{\"a\":\n{\"ok\":true}\n"
	recs, err := Read(strings.NewReader(in), "batch.jsonl")
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v, want Errors", err)
	}
	var lines []int
	for _, e := range es {
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

func TestReadLongLine(t *testing.T) {
	in := "{\"a\":\"" + strings.Repeat("x", MaxLine+10) + "\"}\n{\"b\":1}\n"
	recs, err := Read(strings.NewReader(in), "f")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Line != 1 {
		t.Fatalf("err = %v", err)
	}
	if len(recs) != 1 || recs[0].Line != 2 {
		t.Fatalf("recs = %+v", recs)
	}
}

func FuzzRead(f *testing.F) {
	f.Add("{\"uttid\":\"a\"}\n{}\n")
	f.Add("x\n\n{")
	f.Fuzz(func(t *testing.T, in string) {
		recs, err := Read(strings.NewReader(in), "f")
		nLines := strings.Count(in, "\n") + 1
		for _, r := range recs {
			if r.Line < 1 || r.Line > nLines {
				t.Fatalf("line %d out of range", r.Line)
			}
			if len(r.Payload) == 0 || r.Payload[0] != '{' {
				t.Fatalf("payload %q is not an object", r.Payload)
			}
		}
		var es Errors
		if err != nil && !errors.As(err, &es) {
			t.Fatalf("unexpected error type %T", err)
		}
	})
}
