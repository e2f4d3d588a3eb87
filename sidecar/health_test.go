package sidecar_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// grpcOverSocket is a plain gRPC client on the sidecar's socket, as
// grpcurl -plaintext -unix SOCKET uses it.
type grpcOverSocket struct{ conn *grpc.ClientConn }

func healthClient(t *testing.T, socket string) grpcOverSocket {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return grpcOverSocket{conn}
}

// check calls grpc.health.v1.Health/Check for the whole server.
func (g grpcOverSocket) check(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(g.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus().String()
}

// TestHealthAndReflectionOverSocket: the gRPC health service answers on
// the socket for the server and the Baton services, and reflection lists it.
func TestHealthAndReflectionOverSocket(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	g := healthClient(t, sc.Socket)
	waitFor(t, 20*time.Second, "health SERVING", func() bool { return g.check(t) == "SERVING" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(g.conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "baton.v1.TaskService"}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of baton.v1.TaskService: %v %v", resp, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"}); err == nil {
		t.Error("health of an unknown service answered")
	}
	stream, err := reflectionpb.NewServerReflectionClient(g.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "grpc.health.v1.Health") || !slices.Contains(names, "baton.v1.TaskService") {
		t.Errorf("reflection lists %v", names)
	}
	// grpcurl then asks for the service's descriptor to build the call.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}}); err != nil {
		t.Fatal(err)
	}
	if resp, err = stream.Recv(); err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection of grpc.health.v1.Health: %v %v", resp.GetErrorResponse(), err)
	}
	stream.CloseSend()
}

// etcdProcess is an embedded etcd that a test can stop and start again on
// the same address and data.
type etcdProcess struct {
	addr, dir string
	srv       *embedetcd.Server
}

func restartableEtcd(t *testing.T) *etcdProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &etcdProcess{addr: ln.Addr().String(), dir: t.TempDir()}
	ln.Close()
	e.start(t)
	t.Cleanup(func() {
		if e.srv != nil {
			e.srv.Close()
		}
	})
	return e
}

func (e *etcdProcess) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: e.dir, ClientAddr: e.addr})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
}

func (e *etcdProcess) stop(t *testing.T) {
	t.Helper()
	e.srv.Close()
	e.srv = nil
}

// dashboardExprs returns every PromQL expression of a Grafana dashboard:
// the panels' targets and the template variables' queries.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range []string{"expr", "definition", "query"} {
				if e, ok := v[k].(string); ok && e != "" {
					out = append(out, e)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}
