// Package jsonl reads task files: one JSON object per line, as GLM-TTS and
// most batch inference tools write them.
//
// A Scanner reads one line at a time, so a file of any length is read in
// bounded memory: one line of at most MaxLine bytes, and a 64 KiB buffer.
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
	Payload json.RawMessage // the line, compacted; owned by the caller
}

// LineError is a bad line.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Errors lists bad lines of a file.
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

// MaxLine bounds one line (4 MiB); a longer line is reported as bad with
// its number, and is read to its end without being held.
const MaxLine = 4 << 20

// Scanner reads the records of a JSONL input one line at a time. Blank
// lines are skipped. It is not safe for concurrent use.
type Scanner struct {
	br   *bufio.Reader
	file string
	n    int  // lines read so far
	done bool // the input ended or failed
}

// NewScanner returns a Scanner of r; file names the input in errors.
func NewScanner(r io.Reader, file string) *Scanner {
	return &Scanner{br: bufio.NewReaderSize(r, 64<<10), file: file}
}

// Next returns the next record. A bad line (not a JSON object, invalid
// JSON, longer than MaxLine) is a *LineError naming the file and line;
// scanning may go on after it, so that every bad line can be reported.
// Next returns io.EOF after the last line; any other error is the
// input's read error, wrapped with the file and line, and ends the scan.
func (s *Scanner) Next() (Record, error) {
	for !s.done {
		s.n++
		line, long, err := readLine(s.br)
		if err != nil {
			s.done = true
			if !errors.Is(err, io.EOF) {
				return Record{}, fmt.Errorf("%s:%d: %w", s.file, s.n, err)
			}
			if len(line) == 0 && !long {
				break
			}
		}
		if long {
			return Record{}, &LineError{File: s.file, Line: s.n, Err: fmt.Errorf("line is longer than %d bytes", MaxLine)}
		}
		rec, lerr := parse(line, s.n)
		if lerr != nil {
			return Record{}, &LineError{File: s.file, Line: s.n, Err: lerr}
		}
		if rec != nil {
			return *rec, nil
		}
	}
	return Record{}, io.EOF
}

// Line returns the number of the last line read (0 before the first).
func (s *Scanner) Line() int { return s.n }

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
