package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// glmLine returns the i-th line of a GLM-TTS batch file: 246 bytes, the
// size of the corpus lines issue 17 measured.
func glmLine(i int) json.RawMessage {
	l := fmt.Sprintf(`{"uttid":"utt_%07d","prompt_text":"The quick brown fox jumps over the lazy dog near the river bank.","prompt_speech":"prompts/spk_%04d.wav","syn_text":"%s"}`,
		i, i%1000, "")
	pad := 246 - len(l)
	return json.RawMessage(strings.Replace(l, `"syn_text":""`, `"syn_text":"`+strings.Repeat("x", pad)+`"`, 1))
}

// dbSize returns etcd's own database size (what its quota counts) and
// the bytes in use.
func dbSize(t testing.TB, cli *clientv3.Client) (size, inUse int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	return st.DbSize, st.DbSizeInUse
}

// BenchmarkTaskBytes measures what a task costs in etcd's own dbSize (what
// its quota counts), on a dedicated embedded etcd: 5,000 GLM-TTS lines of 246
// bytes, traced, in one batch and with none. It reports the growth of dbSize per pending
// task over a second fill of 5,000 (the first warms bbolt), the history a
// drain (claim and complete each) writes until compaction, and, after
// compaction and defragmentation, the bytes per pending and per finished
// task. Run with
//
//	go test -run '^$' -bench TaskBytes -benchtime 1x ./sidecar/workqueue
func BenchmarkTaskBytes(b *testing.B) {
	for _, batch := range []string{"corpus-2026-12", ""} {
		name := "batch=" + batch
		if batch == "" {
			name = "plain"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				measureTaskBytes(b, 5000, batch)
			}
		})
	}
}

func measureTaskBytes(t *testing.B, n int, batch string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "baton"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(from int) {
		specs := make([]Spec, n)
		for i := range specs {
			specs[i] = Spec{Queue: "tts", Batch: batch, Payload: glmLine(from + i), Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		}
		if _, err := s.Submit(ctx, specs); err != nil {
			t.Fatal(err)
		}
	}
	fill(0)
	s0, _ := dbSize(t, cli)
	fill(n)
	s1, _ := dbSize(t, cli)
	t.ReportMetric(float64(s1-s0)/float64(n), "B/pending-task")
	compactDefrag := func() int64 {
		st, err := cli.Status(ctx, srv.Endpoint())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Defragment(ctx, srv.Endpoint()); err != nil {
			t.Fatal(err)
		}
		sz, _ := dbSize(t, cli)
		return sz
	}
	pending := compactDefrag()
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	h := Holder{Worker: "w", Lease: lease.ID}
	rresp, err := cli.Get(ctx, prefixReady, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	before, _ := dbSize(t, cli)
	for i, kv := range rresp.Kvs {
		st, err := decodeReady(string(kv.Key), kv.Value)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.claim(ctx, string(kv.Key), kv.ModRevision, st, h, waitKey(h.Lease, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, c.ID, c.Token, c.Status, json.RawMessage(`{"path":"/data/out/`+c.ID+`.wav","duration_s":3.2}`)); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := dbSize(t, cli)
	tasks := float64(len(rresp.Kvs))
	t.ReportMetric(float64(after-before)/tasks, "B/drained-task-history")
	finished := compactDefrag()
	t.ReportMetric(float64(pending)/tasks, "B/pending-task-defragmented")
	t.ReportMetric(float64(finished)/tasks, "B/finished-task-defragmented")
}
