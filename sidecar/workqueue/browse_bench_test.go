package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/batonhq/baton/sidecar/etcdconn"
)

// What the web page's reads of one batch cost against the CLI's read of
// the whole batch, on a batch of 20,000 tasks (one of them CANCELLED):
// go test -run '^$' -bench BenchmarkBrowse ./sidecar/workqueue. The ratios
// are in docs/ui.md.
func BenchmarkBrowse(b *testing.B) {
	const n = 20_000
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{testEndpoint(b)}, Namespace: "browsebench"})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	s, err := NewStore(cli.KV, Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	specs := make([]Spec, 0, 1000)
	for i := range n {
		specs = append(specs, Spec{ID: fmt.Sprintf("t%06d", i), Queue: "q", Batch: "big", Payload: json.RawMessage(`{"syn_text":"a line of text to speak"}`)})
		if len(specs) == cap(specs) {
			if _, err := s.Submit(ctx, specs); err != nil {
				b.Fatal(err)
			}
			specs = specs[:0]
		}
	}
	if _, err := s.Cancel(ctx, "t010000"); err != nil {
		b.Fatal(err)
	}
	// cursorAt returns the page cursor just past task id.
	cursorAt := func(id string) string {
		after := ""
		for {
			p, err := s.BatchPage(ctx, "big", after, "", 500, 0)
			if err != nil || len(p.Tasks) == 0 {
				b.Fatalf("no task %s in the batch: %v", id, err)
			}
			for i, t := range p.Tasks {
				if t.ID == id {
					q, err := s.BatchPage(ctx, "big", after, "", i+1, 0)
					if err != nil {
						b.Fatal(err)
					}
					return q.Next
				}
			}
			after = p.Next
		}
	}
	mid, late := cursorAt("t005000"), cursorAt("t009990")
	b.Run("page-of-50", func(b *testing.B) {
		for b.Loop() {
			if p, err := s.BatchPage(ctx, "big", mid, "", 50, 0); err != nil || len(p.Tasks) != 50 || p.Tasks[0].ID != "t005001" {
				b.Fatal(len(p.Tasks), err)
			}
		}
	})
	b.Run("filtered-page", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.BatchPage(ctx, "big", late, StateCancelled, 50, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("oldest-pending", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.OldestPending(ctx, "q", 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cli-list-batch", func(b *testing.B) {
		for b.Loop() {
			if ts, _, err := s.List(ctx, ListFilter{Batch: "big", Limit: n}); err != nil || len(ts) != n {
				b.Fatal(len(ts), err)
			}
		}
	})
	b.Run("cli-queues", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Queues(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tally-first-read", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewTally(cli.KV, cli.Watcher).load(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
