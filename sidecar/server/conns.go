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
type ConnLimit struct {
	net.Listener
	Max int

	open    atomic.Int64
	refused atomic.Int64
}

// LimitConns wraps l.
func LimitConns(l net.Listener, max int) *ConnLimit { return &ConnLimit{Listener: l, Max: max} }

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
		if l.open.Add(1) > int64(l.Max) {
			l.open.Add(-1)
			l.refused.Add(1)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// countedConn gives its place back when closed (once).
type countedConn struct {
	net.Conn
	l    *ConnLimit
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
