//go:build !linux

package server

import (
	"errors"
	"net"
)

// peerOf is not available here: the socket's file mode is the only gate.
func peerOf(net.Conn) (Peer, error) {
	return Peer{}, errors.New("peer credentials are read on Linux only")
}
