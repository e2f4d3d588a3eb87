// Package client is the Go client of the sidecar's socket API.
package client

import (
	"context"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
)

// Client calls a sidecar over its Unix socket.
type Client struct {
	Tasks  batonv1connect.TaskServiceClient
	Locks  batonv1connect.LockServiceClient
	Config batonv1connect.ConfigServiceClient

	http *http.Client
}

// New returns a client for the sidecar listening on socketPath. It speaks
// the Connect protocol over HTTP/2 without TLS; pass connect.WithGRPC() to
// speak gRPC instead.
func New(socketPath string, opts ...connect.ClientOption) *Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	hc := &http.Client{Transport: tr}
	const base = "http://baton.sock"
	return &Client{
		Tasks:  batonv1connect.NewTaskServiceClient(hc, base, opts...),
		Locks:  batonv1connect.NewLockServiceClient(hc, base, opts...),
		Config: batonv1connect.NewConfigServiceClient(hc, base, opts...),
		http:   hc,
	}
}

// Close closes idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
