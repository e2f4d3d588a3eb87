package sidecar_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/faultproxy"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Regression: a claim transaction that etcd applied but whose answer
// never reached the sidecar (the network held it past the claim timeout)
// left the task CLAIMED under the sidecar's live lease with no worker
// knowing of it, until the task's timeout (5m by default). The sidecar
// must find and give back such a claim. A Next with wait 0 makes its own
// claim transaction (the poll path); its wait key, written in the same
// transaction, is how the sidecar's watch learns that it applied.
func TestAmbiguousClaimIsGivenBack(t *testing.T) {
	t.Parallel()
	link, err := faultproxy.NewLink([]string{endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close) // after the sidecar has stopped
	ns := sidecartest.Namespace(t)
	sc := sidecartest.StartSidecar(t, "", ns, sidecar.Config{
		Etcd:   etcdconn.Config{Endpoints: link.Endpoints(), Namespace: ns},
		Queues: []string{"tts"},
		TTL:    time.Minute,
		Queue:  workqueue.Config{SweepInterval: 500 * time.Millisecond},
	})
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := sc.Client.Tasks.Attach(wctx, connect.NewRequest(&batonv1.AttachRequest{Process: "w"}))
	if err != nil || !stream.Receive() {
		t.Fatalf("attach: %v %v", err, stream.Err())
	}
	session := stream.Msg().Session

	// When the claim transaction of task "ambig" goes out, hold every
	// answer from etcd until the claim has timed out.
	var once sync.Once
	sent := make(chan struct{})
	link.ModifyTx(func(b []byte) []byte {
		if bytes.Contains(b, []byte("q/claim/ambig")) {
			once.Do(func() { link.PauseRx(); close(sent) })
		}
		return b
	})
	other := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}})
	submit(t, other, &batonv1.TaskSpec{Id: "ambig", Payload: payload(t, map[string]any{})})
	_, err = sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Session: session}))
	select {
	case <-sent:
	default:
		t.Fatalf("the claim transaction never went out; next: %v", err)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("next while etcd's answer is held: %v, want UNAVAILABLE", err)
	}
	link.UnmodifyTx()
	link.UnpauseRx()
	// etcd applied the claim; nobody was told. The task must come back
	// long before its 5m timeout (the sidecar's lease is alive).
	resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Session: session, Wait: durationpb.New(30 * time.Second)}))
	if err != nil || resp.Msg.Task == nil {
		cli := sidecartest.Client(t, endpoint, ns)
		for _, k := range []string{"state/ambig", "q/claim/ambig"} {
			r, _ := cli.Get(context.Background(), k)
			t.Logf("%s: %v", k, r.Kvs)
		}
		t.Logf("dispatcher stats %+v", sc.Dispatcher().Stats())
	}
	if err != nil || resp.Msg.Task == nil || resp.Msg.Task.Id != "ambig" {
		t.Fatalf("after the network healed: %v %v; want task ambig", resp, err)
	}
}
