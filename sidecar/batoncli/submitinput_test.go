package batoncli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/jsonl"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// A file changed between the check and the submit pass is refused before
// anything is written: the lines checked would not be the lines written.
func TestSubmitInputChangedAfterCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lines.jsonl")
	if err := os.WriteFile(p, []byte("{\"id\":\"a\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := openSubmitInput(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := io.ReadAll(in.check); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("{\"id\":\"a\"}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = in.rewind()
	if err == nil || !strings.Contains(err.Error(), p+" changed while it was checked; nothing was written") {
		t.Fatalf("rewind after a change: %v", err)
	}
}

// A line that turned bad after the check (the file was rewritten in
// place, size and mtime kept) stops the submit pass with an error.
func TestTaskChunksRefuseALineThatTurnedBad(t *testing.T) {
	store, err := workqueue.NewStore(nil, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b := &specBuilder{store: store, file: "f", tmpl: workqueue.Spec{Queue: "q"}}
	c := newTaskChunks(strings.NewReader("{\"id\":\"a\"}\n{\"id\":\"b\"}\nnot json\n"), b, 2)
	chunk, err := c.next()
	if err != nil || len(chunk) != 2 || chunk[1].ID != "b" {
		t.Fatalf("first chunk %v, %v", chunk, err)
	}
	if _, err := c.next(); err == nil || !strings.Contains(err.Error(), "f changed after it was checked: f:3: not a JSON object") {
		t.Fatalf("second chunk: %v", err)
	}
}

// Standard input from a pipe is spooled while it is good; after a bad
// line, or within a line longer than jsonl.MaxLine (`- < /dev/zero`),
// the spool keeps nothing more, so disk stays bounded too.
func TestSpoolStopsKeeping(t *testing.T) {
	in, err := openSubmitInput("-", io.MultiReader(strings.NewReader("{\"id\":\"a\"}\n"), io.LimitReader(zeros{}, 3*jsonl.MaxLine)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if in.spool == nil {
		t.Fatal("a pipe on stdin is not spooled")
	}
	if _, err := io.Copy(io.Discard, in.check); err != nil {
		t.Fatal(err)
	}
	st, err := in.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > jsonl.MaxLine+64<<10 {
		t.Fatalf("spool holds %d bytes of a %d-byte line", st.Size(), 3*jsonl.MaxLine)
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), filepath.Base(in.f.Name()))); !os.IsNotExist(err) {
		t.Fatalf("the spool file is visible in the temporary directory: %v", err)
	}
	if _, err := in.rewind(); err == nil {
		t.Fatal("rewind of a spool that stopped keeping succeeded")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
