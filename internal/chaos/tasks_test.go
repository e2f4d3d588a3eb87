package chaos

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// The final states of a run are read as the workqueue reports them: a
// task never claimed (it has no state key) is PENDING, not "".
func TestAwaitFinishedReadsNeverClaimedAsPending(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "chaos-final"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	qs, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qs.Submit(ctx, []workqueue.Spec{{ID: "never", Queue: Queue, Payload: json.RawMessage(`{}`)},
		{ID: "gone", Queue: Queue, Payload: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := qs.Cancel(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	r := &run{qs: qs}
	final, err := r.awaitFinished(ctx, []string{"never", "gone"}, 0) // no wait: one read
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"never": "PENDING", "gone": "CANCELLED"}; !maps.Equal(final, want) {
		t.Fatalf("final states %v, want %v", final, want)
	}
}
