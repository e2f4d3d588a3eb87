// Package jsonl reads task files: one JSON object per line, as GLM-TTS and
// most batch inference tools write them.
package jsonl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Record is one task line.
type Record struct {
	Line    int             // 1-based line number
	Payload json.RawMessage // the line, compacted
}

// LineError is a bad line.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Errors lists every bad line of a file.
type Errors []*LineError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// MaxLine bounds one line; longer lines are reported, not read whole.
const MaxLine = 4 << 20

// Read reads every line of r. Blank lines are skipped. Every line that is
// not a JSON object is reported (as Errors) with its line number; file
// names the input in those messages. It reads to the end even after bad
// lines so that all of them are reported at once.
func Read(r io.Reader, file string) ([]Record, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var recs []Record
	var bad Errors
	for n := 1; ; n++ {
		line, long, err := readLine(br)
		if len(line) > 0 || long || err == nil {
			rec, lerr := parse(line, n)
			if long {
				lerr = fmt.Errorf("line is longer than %d bytes", MaxLine)
			}
			if lerr != nil {
				bad = append(bad, &LineError{File: file, Line: n, Err: lerr})
			} else if rec != nil {
				recs = append(recs, *rec)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
	}
	if len(bad) > 0 {
		return recs, bad
	}
	return recs, nil
}

// readLine returns one line without its newline. A line longer than
// MaxLine is read to its end and dropped, with long set. err is io.EOF for
// the last line.
func readLine(br *bufio.Reader) (line []byte, long bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !long && len(line)+len(chunk) <= MaxLine+1 {
			line = append(line, chunk...)
		} else {
			line, long = nil, true
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == nil:
			return bytes.TrimSuffix(line, []byte("\n")), long, nil
		default:
			return line, long, err
		}
	}
}

func parse(line []byte, n int) (*Record, error) {
	line = bytes.TrimSpace(bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")))
	if len(line) == 0 {
		return nil, nil
	}
	if line[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, line); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	return &Record{Line: n, Payload: buf.Bytes()}, nil
}
