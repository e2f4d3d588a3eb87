package batoncli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/batonhq/baton/sidecar/jsonl"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// The two passes of `baton submit` over a JSONL file: checkFile reads
// every line and reports the bad ones without writing anything; then
// taskChunks reads the file again and yields its tasks a chunk at a time
// for writing. Neither holds more than one chunk of the file.

// submitChunk is how many tasks are read and written at a time: about
// 1 MB of specs for GLM-TTS lines, and 16 etcd transactions of 64 tasks
// (25 of up to 42 in a batch; workqueue.opsFor).
const submitChunk = 1024

// specBuilder turns a line into the task spec the flags describe.
type specBuilder struct {
	store         *workqueue.Store // for Normalize only
	file          string
	tmpl          workqueue.Spec // queue, batch, priority, … of every task
	idField       string
	affinityField string
}

// build returns the spec of rec, checked and with defaults filled in, or
// a *jsonl.LineError naming the line.
func (b *specBuilder) build(rec jsonl.Record) (workqueue.Spec, error) {
	sp := b.tmpl
	sp.Payload = rec.Payload
	sp.ID = workqueue.DeriveID(rec.Payload, b.idField)
	if b.affinityField != "" {
		aff, err := affinityOf(rec.Payload, b.affinityField)
		if err != nil {
			return sp, &jsonl.LineError{File: b.file, Line: rec.Line, Err: err}
		}
		sp.Affinity = aff
	}
	if err := b.store.Normalize(&sp, ""); err != nil {
		return sp, &jsonl.LineError{File: b.file, Line: rec.Line, Err: err}
	}
	return sp, nil
}

// fileCheck is what checking a file found.
type fileCheck struct {
	tasks        int   // good lines
	payloadBytes int64 // of the good lines
	withAffinity int   // good lines with an affinity key
	bad          int   // bad lines, every one counted
	shown        jsonl.Errors
}

// checkFile reads in to its end and checks every line as it will be
// submitted, including that no two lines have one task id. It keeps the
// first show bad lines (in line order) and counts the rest. The error is
// the input's read error; bad lines are in the result.
func checkFile(in *submitInput, b *specBuilder, show int) (fileCheck, error) {
	sc := jsonl.NewScanner(in.check, in.name)
	ids := newIDSet()
	defer ids.Close()
	var fc fileCheck
	for {
		rec, err := sc.Next()
		if errors.Is(err, io.EOF) {
			return fc, fc.addRepeats(ids, in, b, show)
		}
		if err == nil {
			var sp workqueue.Spec
			if sp, err = b.build(rec); err == nil {
				if err := ids.add(sp.ID, rec.Line); err != nil {
					return fc, fmt.Errorf("%s: %w", in.name, err)
				}
			}
			if err == nil {
				fc.tasks++
				fc.payloadBytes += int64(len(sp.Payload))
				if sp.Affinity != "" {
					fc.withAffinity++
				}
				continue
			}
		}
		var le *jsonl.LineError
		if !errors.As(err, &le) {
			return fc, err
		}
		fc.bad++
		in.badLine()
		if len(fc.shown) < show {
			fc.shown = append(fc.shown, le)
		}
	}
}

// addRepeats counts the lines whose id an earlier line has as bad lines,
// and adds the first of them to the lines shown, in line order. The ids
// are read again from the input for the lines shown; when it cannot be
// read again (standard input not kept after another bad line), the
// message names the earlier line only.
func (fc *fileCheck) addRepeats(ids *idSet, in *submitInput, b *specBuilder, show int) error {
	type repeat struct{ line, first int }
	var reps []repeat // the lowest lines, at most 2 × show between trims
	n := 0
	trim := func() {
		slices.SortFunc(reps, func(a, b repeat) int { return cmp.Compare(a.line, b.line) })
		reps = reps[:min(len(reps), show)]
	}
	err := ids.repeats(func(line, first int) {
		n++
		if show > 0 {
			reps = append(reps, repeat{line, first})
			if len(reps) >= 2*show {
				trim()
			}
		}
	})
	if err != nil || n == 0 {
		return err
	}
	trim()
	fc.bad += n
	fc.tasks -= n
	idOf := map[int]string{}
	for _, r := range reps {
		idOf[r.line] = ""
	}
	known := readIDs(in, b, idOf)
	for _, r := range reps {
		why := fmt.Errorf("its id is also the id of line %d", r.first)
		if known {
			why = fmt.Errorf("id %q is also the id of line %d", idOf[r.line], r.first)
		}
		fc.shown = append(fc.shown, &jsonl.LineError{File: in.name, Line: r.line, Err: why})
	}
	slices.SortStableFunc(fc.shown, func(a, b *jsonl.LineError) int { return cmp.Compare(a.Line, b.Line) })
	fc.shown = fc.shown[:min(len(fc.shown), show)]
	return nil
}

// readIDs reads the input again and fills in the task ids of the lines in
// ids. It reports whether it could.
func readIDs(in *submitInput, b *specBuilder, ids map[int]string) bool {
	r, err := in.rewind()
	if err != nil {
		return false
	}
	last := 0
	for l := range ids {
		last = max(last, l)
	}
	sc := jsonl.NewScanner(r, in.name)
	for {
		rec, err := sc.Next()
		var le *jsonl.LineError
		if errors.As(err, &le) {
			continue // a bad line, counted already
		}
		if err != nil {
			return false // the input changed: it had these lines
		}
		if _, ok := ids[rec.Line]; ok {
			sp, err := b.build(rec)
			if err != nil {
				return false
			}
			ids[rec.Line] = sp.ID
		}
		if rec.Line >= last {
			return true
		}
	}
}

// report is the message for a file with bad lines: the lines shown, how
// many more there are, and that nothing was written.
func (fc fileCheck) report() string {
	msg := fc.shown.Error()
	if more := fc.bad - len(fc.shown); more > 0 {
		if msg != "" {
			msg += "\n"
		}
		msg += fmt.Sprintf("... and %d more bad lines (--show-errors N prints more)", more)
	}
	if msg != "" {
		msg += "\n"
	}
	return msg + fmt.Sprintf("%d bad lines; nothing was written", fc.bad)
}

// taskChunks yields the tasks of a checked file in line order, at most
// size at a time, reading the file again. Only the current chunk is in
// memory.
type taskChunks struct {
	sc   *jsonl.Scanner
	b    *specBuilder
	size int
	buf  []workqueue.Spec
}

func newTaskChunks(r io.Reader, b *specBuilder, size int) *taskChunks {
	return &taskChunks{sc: jsonl.NewScanner(r, b.file), b: b, size: size, buf: make([]workqueue.Spec, 0, size)}
}

// next returns the next chunk, valid until the next call, or io.EOF after
// the last. A line that is bad now was good when checked, so the file
// changed in between: that is an error.
func (t *taskChunks) next() ([]workqueue.Spec, error) {
	t.buf = t.buf[:0]
	for len(t.buf) < t.size {
		rec, err := t.sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			var sp workqueue.Spec
			if sp, err = t.b.build(rec); err == nil {
				t.buf = append(t.buf, sp)
				continue
			}
		}
		var le *jsonl.LineError
		if errors.As(err, &le) {
			return nil, fmt.Errorf("%s changed after it was checked: %w", t.b.file, err)
		}
		return nil, err
	}
	if len(t.buf) == 0 {
		return nil, io.EOF
	}
	return t.buf, nil
}
