package batoncli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Regression (hardening issue, item 10): `baton submit /dev/zero` or a
// FIFO blocked forever and /dev/urandom grew without bound. What is not a
// regular file is refused at once (exit 2), naming the path and what it
// is, and nothing is read from it.
func TestSubmitRefusesWhatIsNotARegularFile(t *testing.T) {
	ns := sidecartest.Namespace(t)
	fifo := filepath.Join(t.TempDir(), "lines.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, path, kind string }{
		{"zero", "/dev/zero", "a character device"},
		{"urandom", "/dev/urandom", "a character device"},
		{"fifo", fifo, "a named pipe (FIFO)"},
		{"directory", t.TempDir(), "a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			errOut, code := runWithin(t, 20*time.Second, ns, nil, "submit", "--queue", "tts", c.path)
			want := "baton: submit: " + c.path + " is " + c.kind + ", not a regular file"
			if code != 2 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "baton submit -") {
				t.Errorf("submit %s: exit %d, stderr %q; want exit 2 and %q", c.path, code, errOut, want)
			}
		})
	}
}

// runWithin runs the app with stdin (nil: none) and fails the test if it
// has not returned within d, instead of hanging with it.
func runWithin(t *testing.T, d time.Duration, ns string, stdin io.Reader, args ...string) (stderr string, code int) {
	t.Helper()
	type result struct {
		errOut string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		_, errOut, code := runIn(t, ns, stdin, args...)
		done <- result{errOut, code}
	}()
	select {
	case r := <-done:
		return r.errOut, r.code
	case <-time.After(d):
		t.Fatalf("%v did not return within %v", args, d)
		return "", 0
	}
}

// runIn is run with standard input stdin (nil: the app's default).
func runIn(t *testing.T, ns string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = batoncli.Main(context.Background(), append([]string{"baton", "--endpoints", endpoint, "--namespace", ns}, args...), stdin, &out, &errb)
	return out.String(), errb.String(), code
}

// Regression (hardening issue, item 10): every bad line was printed. The
// first --show-errors (default 20) are, in line order; all are counted.
func TestSubmitCapsTheErrorsPrinted(t *testing.T) {
	ns := sidecartest.Namespace(t)
	var lines []string
	for i := 1; i <= 60; i++ {
		if i%2 == 0 {
			lines = append(lines, "not json")
		} else {
			lines = append(lines, fmt.Sprintf(`{"uttid":"u%d"}`, i))
		}
	}
	file := writeFile(t, lines...)
	_, errOut, code := run(t, ns, "submit", "--queue", "tts", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	if n := strings.Count(errOut, ": not a JSON object"); n != 20 {
		t.Errorf("%d bad lines printed, want 20:\n%s", n, errOut)
	}
	for _, want := range []string{file + ":2: not a JSON object", file + ":40: not a JSON object", "... and 10 more bad lines", "30 bad lines; nothing was written"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, file+":42:") {
		t.Errorf("the 21st bad line is printed:\n%s", errOut)
	}
	_, errOut, _ = run(t, ns, "submit", "--queue", "tts", "--show-errors", "0", file)
	if strings.Contains(errOut, "not a JSON object") || !strings.Contains(errOut, "... and 30 more bad lines") {
		t.Errorf("--show-errors 0:\n%s", errOut)
	}
	if _, errOut, code := run(t, ns, "submit", "--queue", "tts", "--show-errors", "-1", file); code != 2 || !strings.Contains(errOut, "--show-errors -1") {
		t.Errorf("--show-errors -1: exit %d, %s", code, errOut)
	}
}

// glmLines returns n GLM-TTS lines u1..un; bad, when not 0, is a line
// whose uttid repeats line 1's.
func glmLines(n, bad int) []string {
	lines := make([]string, 0, n)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("u%d", i)
		if i == bad {
			id = "u1"
		}
		lines = append(lines, fmt.Sprintf(`{"uttid":%q,"prompt_text":"p","prompt_speech":"spk/%d.wav","syn_text":"line %d"}`, id, i%7, i))
	}
	return lines
}

// A file of several chunks is written whole; one with a bad line in its
// last chunk writes nothing, since every line is checked before anything
// is written.
func TestSubmitStreamsChunksAndChecksFirst(t *testing.T) {
	ns := sidecartest.Namespace(t)
	s := store(t, ns)
	const n = 2600 // three chunks
	bad := writeFile(t, glmLines(n, n-1)...)
	_, errOut, code := run(t, ns, "submit", "--queue", "tts", bad)
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf(`%s:%d: id "u1" is also the id of line 1`, bad, n-1)) {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if _, err := s.Get(context.Background(), "u1"); !errors.Is(err, workqueue.ErrNotFound) {
		t.Fatalf("u1: %v; want nothing written", err)
	}
	good := writeFile(t, glmLines(n, 0)...)
	out, errOut, code := run(t, ns, "submit", "--queue", "tts", "--affinity-field", "prompt_speech", good)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d tasks, %d created, 0 existing, queue tts, %d with affinity", n, n, n)) {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, id := range []string{"u1", "u1024", "u1025", fmt.Sprintf("u%d", n)} {
		if _, err := s.Get(context.Background(), id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	out, _, _ = run(t, ns, "submit", "--queue", "tts", good)
	if !strings.Contains(out, fmt.Sprintf("0 created, %d existing", n)) {
		t.Errorf("resubmit: %s", out)
	}
}

// Standard input is read once: from a pipe it is spooled, and a bad line
// at its end still writes nothing; a regular file on stdin is read again
// from where it started.
func TestSubmitStdin(t *testing.T) {
	ns := sidecartest.Namespace(t)
	s := store(t, ns)
	bad := strings.Join(glmLines(1500, 1500), "\n") + "\n"
	errOut, code := runWithin(t, time.Minute, ns, strings.NewReader(bad), "submit", "--queue", "tts", "-")
	if code != 1 || !strings.Contains(errOut, `<stdin>:1500: id "u1" is also the id of line 1`) {
		t.Fatalf("bad stdin: exit %d\n%s", code, errOut)
	}
	if _, err := s.Get(context.Background(), "u1"); !errors.Is(err, workqueue.ErrNotFound) {
		t.Fatalf("u1: %v; want nothing written", err)
	}

	pr, pw := io.Pipe()
	go func() {
		for _, l := range glmLines(1500, 0) {
			if _, err := io.WriteString(pw, l+"\n"); err != nil {
				return
			}
		}
		pw.Close()
	}()
	out, errOut, code := runIn(t, ns, pr, "submit", "--queue", "tts", "-")
	if code != 0 || !strings.Contains(out, "submitted <stdin>: 1500 tasks, 1500 created") {
		t.Fatalf("piped stdin: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if _, err := s.Get(context.Background(), "u1500"); err != nil {
		t.Fatalf("u1500: %v", err)
	}

	// A regular file on stdin, already read past its first line: the rest.
	f, err := os.Open(writeFile(t, append([]string{`{"uttid":"skipped"}`}, `{"uttid":"r1"}`, `{"uttid":"r2"}`)...))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(int64(len(`{"uttid":"skipped"}`)+1), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runIn(t, ns, f, "submit", "--queue", "tts", "-")
	if code != 0 || !strings.Contains(out, "submitted <stdin>: 2 tasks, 2 created") {
		t.Fatalf("file on stdin: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if _, err := s.Get(context.Background(), "skipped"); !errors.Is(err, workqueue.ErrNotFound) {
		t.Errorf("the line before stdin's offset was submitted: %v", err)
	}
}
