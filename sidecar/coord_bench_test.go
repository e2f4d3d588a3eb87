package sidecar_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// benchSidecarNS starts a sidecar on the package's etcd for a benchmark
// and returns it with its namespace.
func benchSidecarNS(b *testing.B) (*sidecartest.Sidecar, string) {
	ns := sidecartest.Namespace(b)
	return sidecartest.StartSidecar(b, endpoint, ns, sidecar.Config{Queues: []string{"tts"}}), ns
}

func benchSession(b *testing.B, sc *sidecartest.Sidecar) string {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "bench"}))
	if err != nil || !stream.Receive() {
		b.Fatalf("attach: %v %v", err, stream.Err())
	}
	return stream.Msg().Session
}

// One worker takes and releases a free lock through the socket: the
// uncontended Lock + Unlock round trip.
func BenchmarkLockUnlockUncontended(b *testing.B) {
	sc := benchSidecar(b)
	s := benchSession(b, sc)
	if _, err := lock(sc.Client, "warm", s, time.Second); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := lock(sc.Client, "bench", s, time.Second); err != nil {
			b.Fatal(err)
		}
		if err := unlock(sc.Client, "bench", s); err != nil {
			b.Fatal(err)
		}
	}
}

// Two workers pass one lock back and forth: each op is one handoff, from
// the holder's Unlock to the queued waiter's Lock returning. The waiter is
// queued in etcd before the holder lets go, as with workers that wait for a
// lock held through a synthesis.
func BenchmarkLockHandoff(b *testing.B) {
	sc, ns := benchSidecarNS(b)
	cli := sidecartest.Client(b, endpoint, ns)
	sessions := [2]string{benchSession(b, sc), benchSession(b, sc)}
	if _, err := lock(sc.Client, "ball", sessions[0], time.Second); err != nil {
		b.Fatal(err)
	}
	holder := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		waiter := 1 - holder
		got := make(chan error, 1)
		go func() { _, err := lock(sc.Client, "ball", sessions[waiter], 30*time.Second); got <- err }()
		for {
			resp, err := cli.Get(context.Background(), namedlock.PrefixLocks+"ball/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				b.Fatal(err)
			}
			if resp.Count == 2 {
				break
			}
		}
		b.StartTimer()
		if err := unlock(sc.Client, "ball", sessions[holder]); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
		holder = waiter
	}
}

// A config change reaches a watcher over the socket: each op is one Set
// through etcd until the Watch stream delivers it.
func BenchmarkConfigChangeToWatcher(b *testing.B) {
	sc, ns := benchSidecarNS(b)
	cli := sidecartest.Client(b, endpoint, ns)
	store := configdoc.NewStore(cli.KV, nil, configdoc.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := store.Set(ctx, "global", []byte(`{"seq":-1}`)); err != nil {
		b.Fatal(err)
	}
	stream, err := sc.Client.Config.Watch(ctx, connect.NewRequest(&batonv1.WatchRequest{Name: "global"}))
	if err != nil || !stream.Receive() {
		b.Fatalf("watch: %v", err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := store.Set(ctx, "global", fmt.Appendf(nil, `{"seq":%d}`, i)); err != nil {
			b.Fatal(err)
		}
		if !stream.Receive() {
			b.Fatal(stream.Err())
		}
	}
	b.StopTimer()
	cancel()
	stream.Close()
}
