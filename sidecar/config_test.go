package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchConfig opens a Watch stream and returns a channel of what it
// delivers; the stream ends when the returned cancel is called.
func watchConfig(t *testing.T, sc *sidecartest.Sidecar, name string, after int64) (<-chan *batonv1.WatchResponse, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := sc.Client.Config.Watch(ctx, connect.NewRequest(&batonv1.WatchRequest{Name: name, AfterRevision: after}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan *batonv1.WatchResponse, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for stream.Receive() {
			ch <- stream.Msg()
		}
	}()
	stop := func() { cancel(); <-done; stream.Close() }
	t.Cleanup(stop)
	return ch, stop
}

func recvConfig(t *testing.T, ch <-chan *batonv1.WatchResponse) *batonv1.WatchResponse {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("watch stream ended")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no config delivered within 20s")
	}
	return nil
}

func seqOf(m *batonv1.WatchResponse) int {
	return int(m.Document.Fields["seq"].GetNumberValue())
}

// A watcher sees every change, in order, with rising revisions; a watcher
// that reconnects with the last revision it saw gets the latest version at
// once, even after etcd compacted the versions in between, and never an
// older one.
func TestConfigWatchInOrderAndAfterReconnect(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	store := configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{})
	ctx := context.Background()
	set := func(seq int) configdoc.Document {
		t.Helper()
		d, err := store.Set(ctx, "global", fmt.Appendf(nil, `{"sample_rate":24000,"seed":%d,"seq":%d}`, seq, seq))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	set(0)
	ch, stop := watchConfig(t, sc, "global", 0)
	first := recvConfig(t, ch)
	if seqOf(first) != 0 {
		t.Fatalf("first delivery is seq %d; want the current version, 0", seqOf(first))
	}
	last := first.Revision
	for i := 1; i <= 20; i++ {
		set(i)
	}
	for i := 1; i <= 20; i++ {
		m := recvConfig(t, ch)
		if seqOf(m) != i || m.Revision <= last {
			t.Fatalf("delivery %d: seq %d revision %d after %d; want seq %d and a higher revision", i, seqOf(m), m.Revision, last, i)
		}
		last = m.Revision
	}
	stop()

	// Disconnected: three changes, then compaction removes their history.
	for i := 21; i <= 23; i++ {
		set(i)
	}
	resp, err := cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ch, stop = watchConfig(t, sc, "global", last)
	m := recvConfig(t, ch)
	if seqOf(m) != 23 || m.Revision <= last {
		t.Fatalf("after reconnect: seq %d revision %d; want the latest (23) above %d", seqOf(m), m.Revision, last)
	}
	last = m.Revision
	stop()

	// Reconnecting at the latest revision delivers nothing until a change.
	ch, _ = watchConfig(t, sc, "global", last)
	set(24)
	if m := recvConfig(t, ch); seqOf(m) != 24 || m.Revision <= last {
		t.Fatalf("after reconnect at the latest: seq %d revision %d; want 24 above %d", seqOf(m), m.Revision, last)
	}

	got, err := sc.Client.Config.Get(ctx, connect.NewRequest(&batonv1.GetRequest{Name: "global"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.Document.Fields["seed"].GetNumberValue() != 24 {
		t.Fatalf("Get = %v", got.Msg.Document)
	}
}

// A document that does not exist yet is delivered when it is first set.
func TestConfigWatchBeforeFirstSet(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	ch, _ := watchConfig(t, sc, "later", 0)
	if _, err := configdoc.NewStore(cli.KV, nil, configdoc.Config{}).Set(context.Background(), "later", []byte(`{"seq": 7}`)); err != nil {
		t.Fatal(err)
	}
	if m := recvConfig(t, ch); seqOf(m) != 7 {
		t.Fatalf("got %v", m.Document)
	}
}

func TestConfigBadRequests(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	ctx := context.Background()
	_, err := sc.Client.Config.Get(ctx, connect.NewRequest(&batonv1.GetRequest{Name: "missing"}))
	if codeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Get of a missing document: %v; want NOT_FOUND naming it", err)
	}
	_, err = sc.Client.Config.Get(ctx, connect.NewRequest(&batonv1.GetRequest{Name: "a/b"}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "name:") {
		t.Fatalf("Get with a bad name: %v; want INVALID_ARGUMENT naming the field", err)
	}
	stream, err := sc.Client.Config.Watch(ctx, connect.NewRequest(&batonv1.WatchRequest{Name: "global", AfterRevision: -1}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
		stream.Close()
	}
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "after_revision") {
		t.Fatalf("Watch with a negative revision: %v; want INVALID_ARGUMENT naming after_revision", err)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The operator's config commands: set checks JSON and the schema and writes
// nothing when either fails; get, history and list show what was set.
func TestConfigCLI(t *testing.T) {
	t.Parallel()
	ns := sidecartest.Namespace(t)
	schema := writeFile(t, "schema.json", `{"type":"object","required":["sample_rate"],"properties":{"sample_rate":{"type":"integer","minimum":8000}}}`)
	v1 := writeFile(t, "v1.json", `{"sample_rate": 24000, "seed": 1}`)
	v2 := writeFile(t, "v2.json", `{"sample_rate": 22050, "seed": 2}`)
	bad := writeFile(t, "bad.json", `{"sample_rate": 100}`)
	notJSON := writeFile(t, "broken.json", `{"sample_rate": `)

	out, stderr, code := opsCLI(t, ns, "config", "set", "--schema", schema, "global", v1)
	if code != 0 || !strings.Contains(out, "global: revision") || !strings.Contains(out, "(new)") {
		t.Fatalf("set v1: exit %d: %s %s", code, out, stderr)
	}
	_, stderr, code = opsCLI(t, ns, "config", "set", "global", bad)
	if code != 1 || !strings.Contains(stderr, "bad.json") || !strings.Contains(stderr, "sample_rate") || !strings.Contains(stderr, "nothing was written") {
		t.Fatalf("set against the schema: exit %d: %s", code, stderr)
	}
	_, stderr, code = opsCLI(t, ns, "config", "set", "global", notJSON)
	if code != 1 || !strings.Contains(stderr, "not valid JSON") {
		t.Fatalf("set of broken JSON: exit %d: %s", code, stderr)
	}
	if out, _, _ = opsCLI(t, ns, "config", "set", "global", v1); !strings.Contains(out, "unchanged") {
		t.Fatalf("set of the same document: %s", out)
	}
	if out, stderr, code = opsCLI(t, ns, "config", "set", "global", v2); code != 0 || !strings.Contains(out, "(was ") {
		t.Fatalf("set v2: exit %d: %s %s", code, out, stderr)
	}

	var cur configdoc.Document
	opsCLIJSON(t, ns, &cur, "config", "get", "global")
	var doc map[string]any
	if err := json.Unmarshal(cur.Data, &doc); err != nil || doc["sample_rate"] != 22050.0 {
		t.Fatalf("get = %s (%v)", cur.Data, err)
	}
	var hist []configdoc.Document
	opsCLIJSON(t, ns, &hist, "config", "history", "global")
	if len(hist) != 2 || hist[0].Revision != cur.Revision || hist[1].Revision >= hist[0].Revision || !strings.Contains(string(hist[1].Data), "24000") {
		t.Fatalf("history = %+v", hist)
	}
	out, _, _ = opsCLI(t, ns, "config", "list")
	if !strings.Contains(out, "global") || !strings.Contains(out, fmt.Sprint(cur.Revision)) {
		t.Fatalf("list:\n%s", out)
	}
	if _, stderr, code = opsCLI(t, ns, "config", "get", "nope"); code != 1 || !strings.Contains(stderr, `"nope" is not set`) {
		t.Fatalf("get of a missing document: exit %d: %s", code, stderr)
	}
}

// `baton config watch` prints the current version and each change.
func TestConfigWatchCLI(t *testing.T) {
	// Not parallel: its run of the command line lasts the whole test (see
	// runCLI).
	ns := sidecartest.Namespace(t)
	cli := sidecartest.Client(t, endpoint, ns)
	store := configdoc.NewStore(cli.KV, nil, configdoc.Config{})
	if _, err := store.Set(context.Background(), "global", []byte(`{"seq":1}`)); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		app := batoncli.New(pw, io.Discard)
		done <- app.RunContext(ctx, []string{"baton", "--endpoints", endpoint, "--namespace", ns, "config", "watch", "-o", "json", "global"})
		pw.Close()
	}()
	dec := json.NewDecoder(pr)
	var d configdoc.Document
	if err := dec.Decode(&d); err != nil || !strings.Contains(string(d.Data), `"seq":1`) {
		t.Fatalf("first line: %+v %v", d, err)
	}
	if _, err := store.Set(context.Background(), "global", []byte(`{"seq":2}`)); err != nil {
		t.Fatal(err)
	}
	var d2 configdoc.Document
	if err := dec.Decode(&d2); err != nil || !strings.Contains(string(d2.Data), `"seq":2`) || d2.Revision <= d.Revision {
		t.Fatalf("second line: %+v %v", d2, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}

// A batch submitted with --pin-config hands every task the document as it
// was at submit, after the config changed and etcd compacted; follow-up
// tasks submitted into the batch get it too; a later submit into the batch
// keeps the first pin.
func TestPinnedConfigSurvivesChangeAndCompaction(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	store := configdoc.NewStore(cli.KV, nil, configdoc.Config{})
	ctx := context.Background()
	v1, err := store.Set(ctx, "global", []byte(`{"sample_rate":24000,"seed":1}`))
	if err != nil {
		t.Fatal(err)
	}
	batch := writeFile(t, "batch.jsonl", `{"uttid":"p1","syn_text":"a"}
{"uttid":"p2","syn_text":"b"}
`)
	if _, stderr, code := opsCLI(t, ns, "submit", "--queue", "tts", "--pin-config", "global", batch); code != 2 || !strings.Contains(stderr, "needs --batch") {
		t.Fatalf("--pin-config without --batch: exit %d: %s", code, stderr)
	}
	out, stderr, code := opsCLI(t, ns, "submit", "--queue", "tts", "--batch", "b1", "--pin-config", "global", batch)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("config global revision %d pinned", v1.Revision)) {
		t.Fatalf("submit: exit %d: %s %s", code, out, stderr)
	}
	v2, err := store.Set(ctx, "global", []byte(`{"sample_rate":16000,"seed":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, v2.Revision); err != nil {
		t.Fatal(err)
	}
	// Submitting more of the batch later keeps the first pin.
	more := writeFile(t, "more.jsonl", `{"uttid":"p3","syn_text":"c"}`+"\n")
	out, _, code = opsCLI(t, ns, "submit", "--queue", "tts", "--batch", "b1", "--pin-config", "global", more)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("revision %d pinned", v1.Revision)) {
		t.Fatalf("second submit: exit %d: %s", code, out)
	}
	// A follow-up a worker submits into the batch is pinned too; a task of
	// another batch is not.
	submit(t, sc, &batonv1.TaskSpec{Id: "p4", Batch: "b1", Payload: payload(t, map[string]any{})},
		&batonv1.TaskSpec{Id: "free", Batch: "b2", Payload: payload(t, map[string]any{})})

	seen := map[string]bool{}
	for range 5 {
		task := next(t, sc, 10*time.Second, "")
		if task == nil {
			t.Fatal("no task")
		}
		seen[task.Id] = true
		if task.Id == "free" {
			if task.Config != nil || task.ConfigRevision != 0 || task.ConfigName != "" {
				t.Fatalf("unpinned task got config %v rev %d", task.Config, task.ConfigRevision)
			}
		} else if task.ConfigName != "global" || task.ConfigRevision != v1.Revision || task.Config.Fields["sample_rate"].GetNumberValue() != 24000 {
			t.Fatalf("task %s: config %s rev %d %v; want global rev %d with sample_rate 24000", task.Id, task.ConfigName, task.ConfigRevision, task.Config, v1.Revision)
		}
		if _, err := sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim})); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("tasks handed out: %v", seen)
	}
	var pinKeys *clientv3.GetResponse
	if pinKeys, err = cli.Get(ctx, "pin/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || pinKeys.Count != 1 {
		t.Fatalf("pin keys: %v %v; want one, for b1", pinKeys, err)
	}
}
