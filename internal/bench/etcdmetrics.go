package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// etcdMetrics are the counters of etcd's own /metrics that the fleet sweep
// reads before and after each phase. They count everything the member did,
// so a phase's figures are differences, and they are one member's: measure
// the fleet on a single-member etcd.
type etcdMetrics struct {
	// Proposals is etcd_server_proposals_applied_total: every write request
	// (Put, DeleteRange, a Txn with a write in either branch, whether its
	// compare succeeded or not) and lease grant or revoke.
	Proposals float64
	// Events is etcd_debugging_mvcc_events_total: watch events sent to
	// watchers, each event counted once per watcher that received it.
	Events float64
	// SentBytes is etcd_network_client_grpc_sent_bytes_total: bytes sent
	// to clients (responses, watch events, lease keepalives).
	SentBytes float64
	// KVRequests is grpc_server_handled_total of etcdserverpb.KV, every
	// method and code: reads included.
	KVRequests float64
	// Watchers is etcd_debugging_mvcc_watcher_total (a gauge).
	Watchers float64
}

// scrapeEtcd reads url (etcd's /metrics) once.
func scrapeEtcd(ctx context.Context, url string) (etcdMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return etcdMetrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return etcdMetrics{}, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return etcdMetrics{}, fmt.Errorf("etcd metrics: %s: %s", url, resp.Status)
	}
	var m etcdMetrics
	seen := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, labels, v, ok := parseSample(sc.Text())
		if !ok {
			continue
		}
		switch {
		case name == "etcd_server_proposals_applied_total":
			m.Proposals = v
		case name == "etcd_debugging_mvcc_events_total":
			m.Events = v
		case name == "etcd_network_client_grpc_sent_bytes_total":
			m.SentBytes = v
		case name == "etcd_debugging_mvcc_watcher_total":
			m.Watchers = v
		case name == "grpc_server_handled_total" && strings.Contains(labels, `grpc_service="etcdserverpb.KV"`):
			m.KVRequests += v
		default:
			continue
		}
		seen[name] = true
	}
	if err := sc.Err(); err != nil {
		return etcdMetrics{}, fmt.Errorf("etcd metrics: %w", err)
	}
	for _, name := range []string{"etcd_server_proposals_applied_total", "etcd_debugging_mvcc_events_total",
		"etcd_network_client_grpc_sent_bytes_total", "grpc_server_handled_total"} {
		if !seen[name] {
			return etcdMetrics{}, fmt.Errorf("etcd metrics: %s has no %s", url, name)
		}
	}
	return m, nil
}

// parseSample splits one line of the Prometheus text format into the
// metric name, its label set as written, and the value. Comments, blank
// lines and lines it cannot read give ok false.
func parseSample(line string) (name, labels string, v float64, ok bool) {
	if line == "" || line[0] == '#' {
		return "", "", 0, false
	}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", "", 0, false
		}
		name, labels, rest = line[:i], line[i+1:j], strings.TrimSpace(line[j+1:])
	} else {
		var found bool
		name, rest, found = strings.Cut(line, " ")
		if !found {
			return "", "", 0, false
		}
	}
	f := strings.Fields(rest) // value, then an optional timestamp
	if len(f) == 0 {
		return "", "", 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", "", 0, false
	}
	return name, labels, v, true
}

// minus returns the counters' growth from a to m.
func (m etcdMetrics) minus(a etcdMetrics) etcdMetrics {
	return etcdMetrics{
		Proposals: m.Proposals - a.Proposals, Events: m.Events - a.Events, SentBytes: m.SentBytes - a.SentBytes,
		KVRequests: m.KVRequests - a.KVRequests, Watchers: m.Watchers,
	}
}
