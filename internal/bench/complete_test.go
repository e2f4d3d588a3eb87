package bench

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/faultproxy"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Complete whose answer etcd held past the sidecar's deadline is
// answered UNAVAILABLE although etcd applied it: the bench's worker asks
// again (as a worker must), is told the claim is gone, and reports the
// ambiguous outcome instead of failing the run (the 1M-line batch run
// once ended on "complete …: unavailable: etcd unavailable"). The task is
// DONE.
func TestCompleteRetriesUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // cleanups run last first: after the sidecar has stopped
	link, err := faultproxy.NewLink([]string{srv.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close)
	sc := sidecartest.StartSidecar(t, "", "b", sidecar.Config{
		Etcd:   etcdconn.Config{Endpoints: link.Endpoints(), Namespace: "b"},
		Queues: []string{queue},
		TTL:    time.Minute,
	})
	ss, err := attach(ctx, []*client.Client{sc.Client})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	if err := submit(ctx, []*client.Client{sc.Client}, 0, 1, func(int) string { return "amb" }); err != nil {
		t.Fatal(err)
	}
	task, err := next(ctx, sc.Client, ss.ids[0], 10*time.Second)
	if err != nil || task == nil {
		t.Fatalf("next: %v %v", task, err)
	}

	// The first Complete transaction goes out and its answer is held; the
	// second (the retry) lets the answers through.
	var mu sync.Mutex
	sent := 0
	link.ModifyTx(func(b []byte) []byte {
		if bytes.Contains(b, []byte("q/claim/amb")) {
			mu.Lock()
			defer mu.Unlock()
			sent++
			switch sent {
			case 1:
				link.PauseRx()
			case 2:
				link.UnpauseRx()
			}
		}
		return b
	})
	err = complete(ctx, sc.Client, task)
	link.UnmodifyTx()
	link.UnpauseRx()
	if !errors.Is(err, errAmbiguousComplete) {
		t.Fatalf("complete: %v; want the ambiguous outcome after a retry", err)
	}
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.Get(ctx, "amb")
	if err != nil || info.Status.State != workqueue.StateDone {
		t.Fatalf("task amb: %+v %v; want DONE", info, err)
	}
}

// deletePrefix deletes every key under the prefix, a range at a time, and
// nothing else.
func TestDeletePrefixInRanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, k := range []string{"a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7", "a0", "b/1"} {
		if _, err := cli.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := deletePrefix(ctx, cli, "a/", 3); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range resp.Kvs {
		left = append(left, string(kv.Key))
	}
	if strings.Join(left, " ") != "a0 b/1" {
		t.Fatalf("left: %v; want a0 b/1", left)
	}
}
