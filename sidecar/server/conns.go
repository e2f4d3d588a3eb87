package server

import (
	"net"
	"sync"
	"sync/atomic"
)

// ConnLimit is a listener that holds at most Max connections open at once:
// a connection accepted beyond that is closed at once and counted, so that
// a local process cannot make the sidecar hold thousands of idle
// connections (each with its buffers). Its counters are safe for
// concurrent use.
//
// With a Policy, it also reads each connection's peer credentials and
// closes, counts and reports (OnRefused) the connections of users the
// policy does not allow.
type ConnLimit struct {
	net.Listener
	Max int
	// Policy, when set, says which peers are accepted.
	Policy *PeerPolicy
	// OnRefused, when set, is told of each peer refused by Policy.
	OnRefused func(Peer)

	open    atomic.Int64
	refused atomic.Int64
	denied  atomic.Int64
}

// LimitConns wraps l.
func LimitConns(l net.Listener, max int) *ConnLimit { return &ConnLimit{Listener: l, Max: max} }

// Denied returns the number of connections closed because their peer is
// not allowed.
func (l *ConnLimit) Denied() int64 { return l.denied.Load() }

// Open returns the number of connections open now.
func (l *ConnLimit) Open() int { return int(l.open.Load()) }

// Refused returns the number of connections closed at accept because Max
// were open.
func (l *ConnLimit) Refused() int64 { return l.refused.Load() }

// Accept returns the next connection within the limit.
func (l *ConnLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: c, l: l}
		if p, err := peerOf(c); err == nil {
			cc.peer, cc.known = p, true
		}
		// Where peer credentials cannot be read (not Linux), the socket's
		// file mode is the only gate.
		if l.Policy != nil && cc.known && !l.Policy.Allows(cc.peer) {
			l.denied.Add(1)
			if l.OnRefused != nil {
				l.OnRefused(cc.peer)
			}
			c.Close()
			continue
		}
		if l.open.Add(1) > int64(l.Max) {
			l.open.Add(-1)
			l.refused.Add(1)
			c.Close()
			continue
		}
		return cc, nil
	}
}

// countedConn gives its place back when closed (once).
type countedConn struct {
	net.Conn
	l     *ConnLimit
	once  sync.Once
	peer  Peer
	known bool // peer was read
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
