package batoncli_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Regression (hardening issue, item 6): payloads that a worker cannot be
// sent (a number beyond float64, duplicate keys, invalid UTF-8) were
// accepted, claimed, and then failed every Next. They are refused at
// submit as FILE:LINE, and nothing of the file is written.
func TestSubmitRefusesPayloadsWorkersCannotReceive(t *testing.T) {
	ns := sidecartest.Namespace(t)
	file := writeFile(t,
		`{"uttid":"ok","syn_text":"fine"}`,
		`{"uttid":"big","x":1e400}`,
		`{"uttid":"dup","a":1,"a":2}`,
		"{\"uttid\":\"utf\",\"syn_text\":\"\xff\xfe\"}",
	)
	_, errOut, code := run(t, ns, "submit", "--queue", "tts", file)
	if code == 0 {
		t.Fatalf("submit accepted poison payloads")
	}
	for _, line := range []string{":2:", ":3:", ":4:"} {
		if !strings.Contains(errOut, line) {
			t.Errorf("stderr does not name line %s:\n%s", line, errOut)
		}
	}
	if strings.Contains(errOut, ":1:") {
		t.Errorf("the good line 1 is reported:\n%s", errOut)
	}
	if _, err := store(t, ns).Get(context.Background(), "ok"); !errors.Is(err, workqueue.ErrNotFound) {
		t.Fatalf("the good line was written although the file has bad lines: %v", err)
	}
}
