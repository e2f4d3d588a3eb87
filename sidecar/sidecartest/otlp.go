package sidecartest

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is a span an OTLPReceiver received, flattened for assertions. Ids
// are lower-case hex; ParentID is "" for a root span.
type Span struct {
	Service  string // the resource's service.name
	TraceID  string
	SpanID   string
	ParentID string
	Name     string
	Kind     string
	Start    time.Time
	End      time.Time
	Attrs    map[string]string // attribute values in their string form
	Events   []string          // event names
	Links    []string          // span ids of linked spans
	Status   string            // "" (unset), "ok" or "error: message"
}

// Duration is End - Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// OTLPReceiver is a real OTLP trace receiver for tests, built on the
// official OTLP protos: it serves the collector's gRPC TraceService and
// OTLP/HTTP (POST /v1/traces, protobuf) on 127.0.0.1 and keeps every span.
type OTLPReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	grpcAddr, httpAddr string

	mu      sync.Mutex
	spans   []Span
	changed chan struct{} // closed and replaced when spans arrive
}

// StartOTLPReceiver starts a receiver that stops when the test ends.
func StartOTLPReceiver(tb testing.TB) *OTLPReceiver {
	tb.Helper()
	r := &OTLPReceiver{changed: make(chan struct{})}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		tb.Fatal(err)
	}
	r.grpcAddr, r.httpAddr = gl.Addr().String(), hl.Addr().String()
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, r)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(gl) }()
	go func() { defer wg.Done(); _ = hs.Serve(hl) }()
	tb.Cleanup(func() {
		gs.Stop()
		hs.Close()
		wg.Wait()
	})
	return r
}

// GRPCEndpoint is the value of OTEL_EXPORTER_OTLP_ENDPOINT for exporters
// speaking OTLP over gRPC ("http://127.0.0.1:port": no TLS).
func (r *OTLPReceiver) GRPCEndpoint() string { return "http://" + r.grpcAddr }

// HTTPEndpoint is the value of OTEL_EXPORTER_OTLP_ENDPOINT for exporters
// speaking OTLP/HTTP with protobuf.
func (r *OTLPReceiver) HTTPEndpoint() string { return "http://" + r.httpAddr }

// Export implements the collector's TraceService.
func (r *OTLPReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *OTLPReceiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	b, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *OTLPReceiver) add(req *collectortrace.ExportTraceServiceRequest) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, flatten(service, s))
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Spans returns every span received so far, in arrival order.
func (r *OTLPReceiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitFor waits until done, given every span received so far, returns
// true, and returns those spans; it fails the test after within.
func (r *OTLPReceiver) WaitFor(tb testing.TB, within time.Duration, done func([]Span) bool) []Span {
	tb.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		spans, changed := append([]Span(nil), r.spans...), r.changed
		r.mu.Unlock()
		if done(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("spans not received within %v; have:\n%s", within, Format(spans))
		}
	}
}

// Format lists spans one a line, for failure messages and logs.
func Format(spans []Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q trace %s span %s parent %s %v\n", s.Service, s.Name, s.TraceID, s.SpanID, s.ParentID, s.Duration())
	}
	return b.String()
}

func flatten(service string, s *tracepb.Span) Span {
	sp := Span{
		Service:  service,
		TraceID:  hex.EncodeToString(s.GetTraceId()),
		SpanID:   hex.EncodeToString(s.GetSpanId()),
		ParentID: hex.EncodeToString(s.GetParentSpanId()),
		Name:     s.GetName(),
		Kind:     strings.TrimPrefix(s.GetKind().String(), "SPAN_KIND_"),
		Start:    time.Unix(0, int64(s.GetStartTimeUnixNano())),
		End:      time.Unix(0, int64(s.GetEndTimeUnixNano())),
		Attrs:    attrs(s.GetAttributes()),
	}
	for _, e := range s.GetEvents() {
		sp.Events = append(sp.Events, e.GetName())
	}
	for _, l := range s.GetLinks() {
		sp.Links = append(sp.Links, hex.EncodeToString(l.GetSpanId()))
	}
	switch st := s.GetStatus(); st.GetCode() {
	case tracepb.Status_STATUS_CODE_OK:
		sp.Status = "ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		sp.Status = "error: " + st.GetMessage()
	}
	return sp
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// SortByStart orders spans by start time.
func SortByStart(spans []Span) {
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].Start.Before(spans[j].Start) })
}
