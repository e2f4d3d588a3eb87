package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/batonhq/baton/sidecar/telemetry"
)

// Peer is the local process at the other end of a socket connection, as
// the kernel reports it (SO_PEERCRED) when the connection is accepted.
type Peer struct {
	UID, GID uint32
	PID      int32
}

func (p Peer) String() string { return fmt.Sprintf("uid %d gid %d pid %d", p.UID, p.GID, p.PID) }

// PeerPolicy says which local users may use the socket: a connection is
// accepted when its peer's uid is one of UIDs or its primary gid one of
// GIDs. The file mode of the socket is the first gate; this one does not
// depend on it, nor on the umask at the time the socket was made.
type PeerPolicy struct {
	UIDs []uint32
	GIDs []uint32
}

// Allows reports whether p may use the socket.
func (pp PeerPolicy) Allows(p Peer) bool {
	return slices.Contains(pp.UIDs, p.UID) || slices.Contains(pp.GIDs, p.GID)
}

type peerKey struct{}

// PeerFrom returns the peer of the connection a request came on, if known.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// withPeer is http.Server.ConnContext: it puts the peer of connections
// accepted by ConnLimit into their requests' context, and its uid and pid
// on every line logged with that context (telemetry.CallerHandler).
func withPeer(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*countedConn); ok && cc.known {
		ctx = telemetry.WithLogAttrs(ctx, slog.Uint64("peer_uid", uint64(cc.peer.UID)), slog.Int64("peer_pid", int64(cc.peer.PID)))
		return context.WithValue(ctx, peerKey{}, cc.peer)
	}
	return ctx
}
