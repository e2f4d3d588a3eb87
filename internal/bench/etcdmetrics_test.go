package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseSample(t *testing.T) {
	for _, tc := range []struct {
		line, name, labels string
		v                  float64
		ok                 bool
	}{
		{"etcd_debugging_mvcc_events_total 1536", "etcd_debugging_mvcc_events_total", "", 1536, true},
		{`grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7`,
			"grpc_server_handled_total", `grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"`, 7, true},
		{"etcd_network_client_grpc_sent_bytes_total 2.60177e+08 1700000000000", "etcd_network_client_grpc_sent_bytes_total", "", 2.60177e+08, true},
		{`x{le="+Inf"} 3`, "x", `le="+Inf"`, 3, true},
		{"# TYPE etcd_debugging_mvcc_events_total counter", "", "", 0, false},
		{"", "", "", 0, false},
		{"noval", "", "", 0, false},
		{"bad{a=\"b\" 1", "", "", 0, false},
		{"x notanumber", "", "", 0, false},
	} {
		name, labels, v, ok := parseSample(tc.line)
		if name != tc.name || labels != tc.labels || v != tc.v || ok != tc.ok {
			t.Errorf("parseSample(%q) = %q, %q, %v, %v; want %q, %q, %v, %v", tc.line, name, labels, v, ok, tc.name, tc.labels, tc.v, tc.ok)
		}
	}
}

func TestScrapeEtcd(t *testing.T) {
	body := strings.Join([]string{
		"# HELP etcd_server_proposals_applied_total The total number of consensus proposals applied.",
		"etcd_server_proposals_applied_total 120",
		"etcd_debugging_mvcc_events_total 48",
		"etcd_debugging_mvcc_watcher_total 8",
		"etcd_network_client_grpc_sent_bytes_total 7987",
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="LeaseGrant",grpc_service="etcdserverpb.Lease",grpc_type="unary"} 9`,
	}, "\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, body) }))
	defer srv.Close()
	m, err := scrapeEtcd(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := etcdMetrics{Proposals: 120, Events: 48, SentBytes: 7987, KVRequests: 7, Watchers: 8}
	if m != want {
		t.Fatalf("scraped %+v; want %+v", m, want)
	}
	if d := m.minus(etcdMetrics{Proposals: 100, Events: 40, SentBytes: 7000, KVRequests: 3}); d != (etcdMetrics{Proposals: 20, Events: 8, SentBytes: 987, KVRequests: 4, Watchers: 8}) {
		t.Fatalf("difference %+v", d)
	}

	// A server that is not etcd is refused, naming what is missing.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "up 1") }))
	defer other.Close()
	if _, err := scrapeEtcd(context.Background(), other.URL); err == nil || !strings.Contains(err.Error(), "etcd_server_proposals_applied_total") {
		t.Fatalf("scraping a non-etcd server: %v", err)
	}
}
