package batoncli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Regression (hardening issue, item 8): text from workers and submitters
// was printed raw, so an ESC sequence in it drove the operator's terminal.
func TestTextFromOthersIsEscaped(t *testing.T) {
	ns := sidecartest.Namespace(t)
	evil := "spk\x1b[2J\x1b]0;owned\x07\r"
	_, err := store(t, ns).Submit(context.Background(), []workqueue.Spec{{
		ID: "esc", Queue: "tts", Payload: json.RawMessage(`{"syn_text":"hi"}`), Affinity: evil,
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"tasks", "get", "esc"}, {"tasks", "list"}} {
		out, errOut, code := run(t, ns, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errOut)
		}
		if strings.ContainsAny(out, "\x1b\x07\r") {
			t.Fatalf("%v printed control characters raw: %q", args, out)
		}
		if args[1] == "list" && !strings.HasPrefix(out, "ID ") {
			t.Fatalf("%v: the header is not a plain row of columns: %q", args, out)
		}
		if args[1] == "get" && !strings.Contains(out, `spk\u001b[2J\u001b]0;owned\u0007\u000d`) {
			t.Fatalf("%v: the escaped text is not shown: %q", args, out)
		}
	}
}
