// Package faultproxy puts a TCP proxy in front of each etcd member for
// one client, so that a test can cut off, slow down or hold back that
// client's traffic alone while the client keeps running: the network
// faults of the chaos harness and of the sidecar's tests. It wraps
// go.etcd.io/etcd/pkg/v3/proxy, the proxy etcd's own robustness tests
// use.
package faultproxy

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"
)

// Link is one sidecar's network path to the cluster: an etcd proxy
// (go.etcd.io/etcd/pkg/v3/proxy, the one etcd's own robustness tests use)
// in front of each member. Faults on a Link affect that sidecar only.
type Link struct {
	proxies []proxy.Server
	addrs   []string
}

// NewLink starts one proxy per member endpoint on free ports.
func NewLink(members []string) (*Link, error) {
	l := &Link{}
	for _, to := range members {
		port, err := freePort()
		if err != nil {
			l.Close()
			return nil, err
		}
		from := fmt.Sprintf("127.0.0.1:%d", port)
		p := proxy.NewServer(proxy.ServerConfig{
			Logger:        zap.NewNop(),
			From:          url.URL{Scheme: "tcp", Host: from},
			To:            url.URL{Scheme: "tcp", Host: to},
			DialTimeout:   time.Second,
			RetryInterval: 100 * time.Millisecond,
		})
		select {
		case <-p.Ready():
		case err := <-p.Error():
			p.Close()
			l.Close()
			return nil, fmt.Errorf("proxy %s → %s: %w", from, to, err)
		}
		l.proxies = append(l.proxies, p)
		l.addrs = append(l.addrs, from)
	}
	return l, nil
}

// Endpoints are the addresses the sidecar dials.
func (l *Link) Endpoints() []string { return l.addrs }

// Partition stops all traffic in both directions and accepts no new
// connection, while open connections stay open: the sidecar keeps running
// and believes it is connected. Bytes already sent are held, not dropped,
// and arrive when the partition heals, as TCP delivers them after a real
// partition (or the sidecar's gRPC keepalive gives the connection up first).
// Dropping bytes inside a live connection (the proxy's blackhole) is not a
// network partition: it corrupts HTTP/2's header compression state, which
// no real network does under TCP's checksums and sequence numbers.
func (l *Link) Partition() {
	for _, p := range l.proxies {
		p.PauseAccept()
		p.PauseTx()
		p.PauseRx()
	}
}

// Heal ends a partition.
func (l *Link) Heal() {
	for _, p := range l.proxies {
		p.UnpauseTx()
		p.UnpauseRx()
		p.UnpauseAccept()
	}
}

// Delay adds latency (± jitter) to both directions.
func (l *Link) Delay(latency, jitter time.Duration) {
	for _, p := range l.proxies {
		p.DelayTx(latency, jitter)
		p.DelayRx(latency, jitter)
	}
}

// Undelay removes the latency.
func (l *Link) Undelay() {
	for _, p := range l.proxies {
		p.UndelayTx()
		p.UndelayRx()
	}
}

// ModifyTx passes every chunk sent towards etcd through f (f may hold it).
func (l *Link) ModifyTx(f func([]byte) []byte) {
	for _, p := range l.proxies {
		p.ModifyTx(f)
	}
}

// UnmodifyTx removes f.
func (l *Link) UnmodifyTx() {
	for _, p := range l.proxies {
		p.UnmodifyTx()
	}
}

// PauseRx holds every answer from etcd (connections stay whole) until
// UnpauseRx.
func (l *Link) PauseRx() {
	for _, p := range l.proxies {
		p.PauseRx()
	}
}

// UnpauseRx releases the held answers.
func (l *Link) UnpauseRx() {
	for _, p := range l.proxies {
		p.UnpauseRx()
	}
}

// Close stops the proxies.
func (l *Link) Close() {
	for _, p := range l.proxies {
		p.Close()
	}
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
