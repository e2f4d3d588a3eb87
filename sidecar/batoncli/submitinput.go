package batoncli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/batonhq/baton/sidecar/jsonl"
)

// submitInput is the input of `baton submit`, read twice: once to check
// every line, then again to write the tasks, so that a bad line anywhere
// writes nothing and neither pass holds the file in memory.
//
// A FILE must be a regular file: a FIFO or a device could not be read
// twice, and /dev/zero or /dev/urandom never end. Standard input ("-") is
// read once; the check pass copies it to a spool file in os.TempDir
// (created 0600 and unlinked at once, so nothing is left behind even on
// kill -9), unless it is a regular file itself (`< file.jsonl`), which is
// read again from where it started.
type submitInput struct {
	name  string   // the name in messages: the path, or <stdin>
	f     *os.File // the file read by the submit pass
	start int64    // offset of the input's first byte in f
	check io.Reader
	spool *spoolWriter // nil unless standard input is spooled
	own   bool         // f is ours to close (not standard input)
	// regular: the input is a regular file, whose size and mtime when
	// opened must not change before the submit pass.
	regular bool
	size    int64
	mtime   time.Time
}

// openSubmitInput opens path ("-" for stdin) for a submit. It refuses
// what is not a regular file, naming the path and what it is, without
// blocking on a FIFO that has no writer.
func openSubmitInput(path string, stdin io.Reader) (*submitInput, error) {
	if path == "-" {
		return openStdin(stdin)
	}
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer. It changes nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is %s, not a regular file: give a file, or - to read standard input (cmd | baton submit -)", path, fileKind(st.Mode()))
	}
	return &submitInput{name: path, f: f, check: f, own: true, regular: true, size: st.Size(), mtime: st.ModTime()}, nil
}

func openStdin(stdin io.Reader) (*submitInput, error) {
	in := &submitInput{name: "<stdin>"}
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				in.f, in.start, in.check = f, off, f
				in.regular, in.size, in.mtime = true, st.Size(), st.ModTime()
				return in, nil
			}
		}
	}
	sp, err := os.CreateTemp("", "baton-submit-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("spooling standard input: %w", err)
	}
	// Unlinked at once: the open file stays readable, and nothing is left
	// in the temporary directory however the process ends.
	if err := os.Remove(sp.Name()); err != nil {
		sp.Close()
		return nil, fmt.Errorf("spooling standard input: %w", err)
	}
	in.f, in.own = sp, true
	in.spool = &spoolWriter{f: sp}
	in.check = io.TeeReader(stdin, in.spool)
	return in, nil
}

// fileKind names what a file that is not regular is.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	default:
		return "not a regular file (" + m.Type().String() + ")"
	}
}

// badLine tells the spool that the check pass found a bad line: nothing
// will be written, so the rest of standard input is read (to count its bad
// lines) without being kept.
func (in *submitInput) badLine() {
	if in.spool != nil {
		in.spool.stop()
	}
}

// rewind returns a reader of the whole input again, for the submit pass.
// A FILE changed since it was opened (size or modification time) is an
// error: the lines checked would not be the lines written.
func (in *submitInput) rewind() (io.Reader, error) {
	if in.spool != nil && in.spool.err != nil {
		return nil, fmt.Errorf("spooling standard input: %w", in.spool.err)
	}
	if in.regular {
		st, err := in.f.Stat()
		if err != nil {
			return nil, err
		}
		if st.Size() != in.size || !st.ModTime().Equal(in.mtime) {
			return nil, fmt.Errorf("%s changed while it was checked; nothing was written", in.name)
		}
	}
	if _, err := in.f.Seek(in.start, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%s: %w", in.name, err)
	}
	return in.f, nil
}

// Close closes the file (standard input is left open) and with it the
// spool, which the system then frees.
func (in *submitInput) Close() error {
	if !in.own {
		return nil
	}
	return in.f.Close()
}

// spoolWriter keeps standard input for the submit pass. It stops keeping
// it once a bad line was seen (nothing will be written) or a line is over
// jsonl.MaxLine (that line is bad), so that an endless input such as
// `- < /dev/zero` uses bounded disk as well as bounded memory.
type spoolWriter struct {
	f       *os.File
	stopped bool
	lineLen int // bytes since the last newline
	err     error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.stopped {
		return len(p), nil
	}
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			w.lineLen += len(rest)
			break
		}
		w.lineLen, rest = 0, rest[i+1:]
	}
	if w.lineLen > jsonl.MaxLine {
		w.stop()
		return len(p), nil
	}
	if _, err := w.f.Write(p); err != nil {
		// Checking goes on (its errors are worth reporting); the submit
		// pass reports this one.
		w.err = err
		w.stop()
	}
	return len(p), nil
}

func (w *spoolWriter) stop() {
	if !w.stopped && w.err == nil {
		w.err = errSpoolStopped
	}
	w.stopped = true
}

var errSpoolStopped = errors.New("input not kept")
