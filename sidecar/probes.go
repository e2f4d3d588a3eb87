package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/telemetry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// probes are the sidecar's readiness conditions, for /readyz on the admin
// address and the gRPC health service on the socket.
type probes struct {
	cli      *clientv3.Client
	lease    *coord.LeaseKeeper
	socket   string
	draining *atomic.Bool // shutdown began: no new work is handed out
	serving  *atomic.Bool // the socket server runs
}

// probeTimeout bounds the etcd probe: the etcd client waits for a
// connection rather than failing fast, and probes must answer quickly.
const probeTimeout = time.Second

// etcd checks that etcd answers a linearizable read (a quorum is up)
// within probeTimeout.
func (p probes) etcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := p.cli.Get(ctx, "readyz", clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd did not answer: %w", err)
	}
	return nil
}

// leaseHeld checks that the sidecar holds a live lease.
func (p probes) leaseHeld(context.Context) error {
	_, _, err := p.lease.Session()
	return err
}

// socketServing checks that the socket server runs and accepts a
// connection, and that the sidecar is not shutting down.
func (p probes) socketServing(ctx context.Context) error {
	if p.draining.Load() {
		return errors.New("the sidecar is shutting down")
	}
	if !p.serving.Load() {
		return errors.New("the socket server is not running")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.socket)
	if err != nil {
		return fmt.Errorf("socket %s: %w", p.socket, err)
	}
	return c.Close()
}

// checks are the conditions of /readyz.
func (p probes) checks() []telemetry.Check {
	return []telemetry.Check{
		{Name: "etcd", Check: p.etcd},
		{Name: "lease", Check: p.leaseHeld},
		{Name: "socket", Check: p.socketServing},
	}
}

// serve is the gRPC health service's condition: asked over the socket, the
// socket evidently serves; etcd must answer and the lease be held.
func (p probes) serve(ctx context.Context) error {
	if p.draining.Load() {
		return errors.New("the sidecar is shutting down")
	}
	if err := p.leaseHeld(ctx); err != nil {
		return err
	}
	return p.etcd(ctx)
}
