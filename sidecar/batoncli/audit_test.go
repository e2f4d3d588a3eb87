package batoncli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Hardening issue, "Audit": each mutating operator command (tasks cancel
// and retry, queues pause and resume, config set) leaves exactly one
// record saying what and who — this process's OS user, host and pid — and
// one that changes nothing leaves none; `baton audit list` shows them,
// with control characters escaped.
func TestOperatorCommandsAreAudited(t *testing.T) {
	ns := sidecartest.Namespace(t)
	if _, err := store(t, ns).Submit(context.Background(), []workqueue.Spec{{ID: "t1", Queue: "tts", Payload: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	doc := writeFile(t, `{"seed": 1}`)
	doc2 := writeFile(t, `{"seed": 2}`)
	for _, args := range [][]string{
		{"tasks", "cancel", "t1"}, {"tasks", "cancel", "t1"},
		{"tasks", "retry", "t1"}, {"tasks", "retry", "t1"},
		{"queues", "pause", "tts"}, {"queues", "pause", "tts"},
		{"queues", "resume", "tts"}, {"queues", "resume", "tts"},
		{"config", "set", "global", doc}, {"config", "set", "global", doc}, {"config", "set", "global", doc2},
		{"tasks", "cancel", "missing"},
	} {
		if _, errOut, code := run(t, ns, args...); code != 0 && args[2] != "missing" {
			t.Fatalf("%v: exit %d\n%s", args, code, errOut)
		}
	}
	recs, _, skipped, err := audit.List(context.Background(), sidecartest.Client(t, endpoint, ns).KV, 0)
	if err != nil || skipped != 0 {
		t.Fatalf("list: %v, %d skipped", err, skipped)
	}
	var got []string
	host, _ := os.Hostname()
	for _, r := range recs {
		if r.UID != os.Getuid() || r.PID != os.Getpid() || r.Host != host || r.User == "" {
			t.Errorf("record %+v does not name this process", r)
		}
		got = append(got, fmt.Sprintf("%s %s", r.Action, r.Object))
	}
	want := []string{"task.cancel t1", "task.retry t1", "queue.pause tts", "queue.resume tts", "config.set global", "config.set global"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records:\n%q\nwant one per change:\n%q", got, want)
	}

	// A record with control characters in its text (written by a
	// modified client) is shown escaped.
	cli := sidecartest.Client(t, endpoint, ns)
	if _, err := cli.Put(context.Background(), audit.Prefix+"9999999999999999999-evil", `{"time_ms":1,"action":"queue.pause","object":"tts","user":"x\u001b[2Jy","uid":7,"pid":8}`); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, ns, "audit", "list")
	if code != 0 {
		t.Fatalf("audit list: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[1], "task.cancel") || !strings.Contains(lines[1], fmt.Sprintf("%s:%d", host, os.Getpid())) {
		t.Fatalf("audit list:\n%s", out)
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(lines[7], `x\u001b[2Jy(7)`) {
		t.Fatalf("audit list does not escape a record's text:\n%s", out)
	}
	out, _, code = run(t, ns, "audit", "list", "--limit", "2", "-o", "json")
	var js []audit.Record
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || len(js) != 2 || js[0].Action != audit.ConfigSet || js[0].Revision == 0 {
		t.Fatalf("audit list -o json --limit 2: exit %d\n%s", code, out)
	}
}
