package sidecar_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/server"
)

// A client learns the socket API's version when it opens its session, so
// that one too old or too new for its sidecar can say so (worker
// experience issue, packaging).
func TestAttachSendsTheAPIVersion(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "w"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	if got := stream.ResponseHeader().Get(server.APIVersionHeader); got != server.APIVersion || got == "" {
		t.Fatalf("%s = %q, want %q", server.APIVersionHeader, got, server.APIVersion)
	}
}
