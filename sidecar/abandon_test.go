package sidecar_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/durationpb"
)

// signalHandler is a slog handler that closes ch at the first record whose
// message starts with prefix.
type signalHandler struct {
	prefix string
	once   sync.Once
	ch     chan struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalHandler) WithGroup(string) slog.Handler      { return h }

// Regression (found by the chaos runs' fault model): a worker dies while
// etcd is unreachable, so the sidecar cannot return its claim at once.
// The sidecar's lease survives the outage, so nothing else returns the
// task either; the sidecar must retry, not leave the task CLAIMED until
// its timeout (5m by default).
func TestAbandonRetriedWhenEtcdComesBack(t *testing.T) {
	t.Parallel() // mostly waits on its own etcd; runs beside TestReadyzFollowsEtcd
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	failed := &signalHandler{prefix: "returning claim failed", ch: make(chan struct{})}
	sc := sidecartest.StartSidecar(t, addr, sidecartest.Namespace(t), sidecar.Config{
		Queues: []string{"tts"}, TTL: time.Minute, Logger: slog.New(failed),
	})
	submit(t, sc, &batonv1.TaskSpec{Id: "orphaned", Payload: payload(t, map[string]any{})})

	wctx, killWorker := context.WithCancel(context.Background())
	defer killWorker()
	stream, err := sc.Client.Tasks.Attach(wctx, connect.NewRequest(&batonv1.AttachRequest{Process: "w"}))
	if err != nil || !stream.Receive() {
		t.Fatalf("attach: %v %v", err, stream.Err())
	}
	resp, err := sc.Client.Tasks.Next(context.Background(), connect.NewRequest(&batonv1.NextRequest{Session: stream.Msg().Session, Wait: durationpb.New(5 * time.Second)}))
	if err != nil || resp.Msg.Task == nil {
		t.Fatalf("next: %v %v", resp, err)
	}

	etcd.Close() // etcd goes away ...
	killWorker() // ... and the worker dies meanwhile: its session closes
	select {
	case <-failed.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("the sidecar did not report that returning the claim failed")
	}
	etcd, err = embedetcd.Start(ctx, embedetcd.Config{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// The sidecar first, while etcd answers: stopped the other way
		// round, etcd waits 7s for the sidecar's streams and the sidecar
		// then for etcd.
		if err := sc.Stop(); err != nil {
			t.Errorf("sidecar: %v", err)
		}
		etcd.Close()
	}()
	// Far less than the task's 5m timeout and the sidecar's 1m TTL.
	task := next(t, sc, 20*time.Second, "")
	if task == nil || task.Id != "orphaned" || task.Attempt != 2 {
		t.Fatalf("after etcd came back got %v; want orphaned at attempt 2", task)
	}
}
