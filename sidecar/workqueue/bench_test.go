package workqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The hot paths of the work queue. Run with
//
//	go test -run '^$' -bench . ./sidecar/workqueue
//
// The transaction benchmarks use an embedded etcd; they time one
// transaction at a time, so they measure latency, not throughput (baton
// bench measures throughput).

func benchStore(b *testing.B) (*Store, *clientv3.Client) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{s.Endpoint()}, Namespace: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	store, err := NewStore(cli.KV, Config{})
	if err != nil {
		b.Fatal(err)
	}
	return store, cli
}

// readyEntries submits n tasks and returns their ready entries in order.
func readyEntries(b *testing.B, store *Store, cli *clientv3.Client, n int) []entry {
	b.Helper()
	ctx := context.Background()
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = Spec{ID: fmt.Sprintf("t-%07d", i), Queue: "tts", Payload: []byte(`{"syn_text":"hello"}`)}
	}
	if _, err := store.Submit(ctx, specs); err != nil {
		b.Fatal(err)
	}
	resp, err := cli.Get(ctx, prefixReady, clientv3.WithPrefix())
	if err != nil {
		b.Fatal(err)
	}
	es := make([]entry, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		st, err := decodeStatus(kv.Value)
		if err != nil {
			b.Fatal(err)
		}
		es[i] = entry{key: string(kv.Key), modRev: kv.ModRevision, st: st, seen: time.Now()}
	}
	return es
}

func benchHolder(b *testing.B, cli *clientv3.Client) Holder {
	b.Helper()
	l, err := cli.Grant(context.Background(), 60)
	if err != nil {
		b.Fatal(err)
	}
	return Holder{Worker: "bench", Lease: l.ID}
}

// BenchmarkClaimTxn times the claim transaction (compare the ready
// entry, delete it, write the lease-bound claim key, the run marker and
// the state, read the spec).
func BenchmarkClaimTxn(b *testing.B) {
	store, cli := benchStore(b)
	es := readyEntries(b, store, cli, b.N)
	h := benchHolder(b, cli)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := store.claim(ctx, es[i].key, es[i].modRev, es[i].st, h, waitKey(h.Lease, uint64(i+1))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompleteTxn times Complete's transaction on a live claim.
func BenchmarkCompleteTxn(b *testing.B) {
	store, cli := benchStore(b)
	es := readyEntries(b, store, cli, b.N)
	h := benchHolder(b, cli)
	ctx := context.Background()
	claims := make([]*Claimed, b.N)
	for i := range claims {
		c, err := store.claim(ctx, es[i].key, es[i].modRev, es[i].st, h, waitKey(h.Lease, uint64(i+1)))
		if err != nil {
			b.Fatal(err)
		}
		claims[i] = c
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := claims[i]
		if err := store.Complete(ctx, c.ID, c.Token, c.Status, nil); err != nil {
			b.Fatal(err)
		}
	}
}

var sinkString string

func BenchmarkReadyKey(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		sinkString = readyKey("tts", 10, 1_763_000_000_000_000_000+int64(i), "utt_000123")
	}
}

func BenchmarkParseReadyKey(b *testing.B) {
	k := readyKey("tts", 10, 1_763_000_000_000_000_000, "utt_000123")
	for b.Loop() {
		if _, err := parseReadyKey(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseClaim(b *testing.B) {
	c := FormatClaim("utt_000123", 1234567, newClaimSecret())
	for b.Loop() {
		if _, _, _, err := ParseClaim(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusCodec is the record written three times per claim and
// decoded for every ready entry the watch sees.
func BenchmarkStatusCodec(b *testing.B) {
	st := Status{State: StateClaimed, Queue: "tts", Attempt: 1, MaxAttempts: 3, TimeoutMS: 300000, Batch: "b42",
		Order: 1_763_000_000_000_000_000, UpdatedMS: 1_763_000_000_000, Holder: "gpu-node-7-12345", Session: "s-0123456789abcdef01234567",
		Lease: 7587869342385734, DeadlineMS: 1_763_000_300_000}
	for b.Loop() {
		if _, err := decodeStatus([]byte(st.encode())); err != nil {
			b.Fatal(err)
		}
	}
}
