package audit_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var endpoint string

func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }

// write records one action in a transaction of its own, as an operator's
// action would.
func write(t *testing.T, kv clientv3.KV, w *audit.Writer, object string) {
	t.Helper()
	ops, err := w.Ops(context.Background(), audit.QueuePause, object, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Txn(context.Background()).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
}

func objects(t *testing.T, kv clientv3.KV) []string {
	t.Helper()
	recs, _, skipped, err := audit.List(context.Background(), kv, 0)
	if err != nil || skipped != 0 {
		t.Fatalf("list: %v (%d skipped)", err, skipped)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Object)
	}
	return out
}

// Retention: the records never grow past Keep, nor older than MaxAge; the
// oldest go first.
func TestRetentionBoundsTheRecords(t *testing.T) {
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	w, err := audit.NewWriter(cli.KV, audit.WriterConfig{Keep: 5, MaxAge: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		now = now.Add(time.Second)
		write(t, cli.KV, w, fmt.Sprintf("q%02d", i))
	}
	if got, want := fmt.Sprint(objects(t, cli.KV)), "[q07 q08 q09 q10 q11]"; got != want {
		t.Fatalf("records after 12 writes with keep 5: %s, want %s", got, want)
	}
	// Two hours later, one more: the others are past MaxAge.
	now = now.Add(2 * time.Hour)
	write(t, cli.KV, w, "late")
	if got, want := fmt.Sprint(objects(t, cli.KV)), "[late]"; got != want {
		t.Fatalf("records after the age limit: %s, want %s", got, want)
	}
	// A writer whose clock is behind the newest record still writes (its
	// trim stops short of its own key).
	now = now.Add(-10 * time.Minute)
	write(t, cli.KV, w, "skewed")
	if got, want := fmt.Sprint(objects(t, cli.KV)), "[skewed late]"; got != want {
		t.Fatalf("records after a write from a clock behind: %s, want %s", got, want)
	}
}

// The record says who: the process's OS user, host and pid, and the etcd
// user; text fields are clipped.
func TestRecordSaysWho(t *testing.T) {
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	actor := audit.LocalActor("ops")
	host, _ := os.Hostname()
	if actor.UID != os.Getuid() || actor.PID != os.Getpid() || actor.Host != host || actor.EtcdUser != "ops" || actor.User == "" {
		t.Fatalf("LocalActor: %+v", actor)
	}
	long := make([]byte, 5000)
	for i := range long {
		long[i] = 'x'
	}
	actor.User = string(long)
	w, err := audit.NewWriter(cli.KV, audit.WriterConfig{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	write(t, cli.KV, w, "tts")
	recs, _, _, err := audit.List(context.Background(), cli.KV, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("list: %v %v", recs, err)
	}
	r := recs[0]
	if r.Action != audit.QueuePause || r.Object != "tts" || r.UID != os.Getuid() || r.PID != os.Getpid() || r.Host != host || r.EtcdUser != "ops" || len(r.User) != 256 || r.Revision == 0 {
		t.Fatalf("record %+v", r)
	}
}
