package sidecar_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/testcert"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/internal/tlsfile"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
)

// tlsEtcd is an embedded etcd that serves clients over TLS only and
// requires a client certificate of a trusted CA (--client-cert-auth), with
// authentication on; it can be restarted on the same port and data with
// other trusted CAs.
type tlsEtcd struct {
	t        *testing.T
	dir      string
	port     int
	serverCA *testcert.CA // signed the server's certificate; clients trust it
	srvCert  string
	srvKey   string
	etcd     *embed.Etcd
}

// Endpoint is the https URL clients dial.
func (e *tlsEtcd) Endpoint() string { return fmt.Sprintf("https://127.0.0.1:%d", e.port) }

func newTLSEtcd(t *testing.T) *tlsEtcd {
	dir := t.TempDir()
	e := &tlsEtcd{t: t, dir: dir, port: freePort(t), serverCA: testcert.NewCA(t, dir, "server"),
		srvCert: filepath.Join(dir, "server.pem"), srvKey: filepath.Join(dir, "server-key.pem")}
	e.serverCA.Server(t, "etcd").Write(t, e.srvCert, e.srvKey)
	t.Cleanup(e.stop)
	return e
}

// start starts etcd trusting the client certificates of clientCA only.
func (e *tlsEtcd) start(clientCA *testcert.CA) {
	e.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "tls"
	cfg.Dir = filepath.Join(e.dir, "data")
	cu, _ := url.Parse(e.Endpoint())
	pu, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: e.srvCert, KeyFile: e.srvKey, TrustedCAFile: clientCA.CertFile, ClientCertAuth: true}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.BcryptCost = 4 // the least: every password check costs CPU, and the test machine is shared
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case err := <-etcd.Err():
		etcd.Close()
		e.t.Fatal(err)
	case <-time.After(30 * time.Second):
		etcd.Close()
		e.t.Fatal("etcd not ready within 30s")
	}
	e.etcd = etcd
}

func (e *tlsEtcd) stop() {
	if e.etcd != nil {
		e.etcd.Close()
		e.etcd = nil
	}
}

// client connects with a certificate of ca (common name cn) and, when
// user is set, a password.
func (e *tlsEtcd) client(ca *testcert.CA, cn, user, password string) *clientv3.Client {
	e.t.Helper()
	certFile, keyFile := filepath.Join(e.dir, cn+"-"+filepath.Base(ca.CertFile)), filepath.Join(e.dir, cn+"-key-"+filepath.Base(ca.CertFile))
	ca.Client(e.t, cn).Write(e.t, certFile, keyFile)
	crt, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		e.t.Fatal(err)
	}
	pool, err := tlsfile.LoadCAPool(e.serverCA.CertFile, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	roots, _ := pool.Pool()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, Username: user, Password: password, Logger: zap.NewNop(),
		DialTimeout: 20 * time.Second, TLS: &tls.Config{Certificates: []tls.Certificate{crt}, RootCAs: roots, MinVersion: tls.VersionTLS12}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli
}

// setup turns authentication on with root (password root-pw) and runs the
// steps as root.
func (e *tlsEtcd) setup(ctx context.Context, ca *testcert.CA, steps ...func(root *clientv3.Client) error) *clientv3.Client {
	e.t.Helper()
	anon := e.client(ca, "setup", "", "")
	for _, step := range []func(*clientv3.Client) error{
		func(c *clientv3.Client) error { _, err := c.RoleAdd(ctx, "root"); return err },
		func(c *clientv3.Client) error { _, err := c.UserAdd(ctx, "root", "root-pw"); return err },
		func(c *clientv3.Client) error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func(c *clientv3.Client) error { _, err := c.AuthEnable(ctx); return err },
	} {
		if err := step(anon); err != nil {
			e.t.Fatal(err)
		}
	}
	root := e.client(ca, "root", "root", "root-pw")
	for _, step := range steps {
		if err := step(root); err != nil {
			e.t.Fatal(err)
		}
	}
	return root
}

// grantNamespace makes role (read-write or read-only on ns's prefix) and
// user with password, holding that role.
func grantNamespace(ctx context.Context, role, ns string, perm clientv3.PermissionType, user, password string) []func(*clientv3.Client) error {
	p := ns + "/"
	return []func(*clientv3.Client) error{
		func(c *clientv3.Client) error { _, err := c.RoleAdd(ctx, role); return err },
		func(c *clientv3.Client) error {
			_, err := c.RoleGrantPermission(ctx, role, p, clientv3.GetPrefixRangeEnd(p), perm)
			return err
		},
		func(c *clientv3.Client) error { _, err := c.UserAdd(ctx, user, password); return err },
		func(c *clientv3.Client) error { _, err := c.UserGrantRole(ctx, user, role); return err },
	}
}

// Hardening issue, "certificates re-read when they change": the sidecar's
// etcd client certificate is read from its files on each new connection,
// so rotating it (cert-manager rewriting the Secret) needs no restart.
// etcd first trusts client CA 1 and the sidecar's certificate comes from
// CA 1; the files are then replaced with a certificate of CA 2, and etcd
// restarts trusting only CA 2. The same sidecar process must connect again
// and hand out a task. (Before, the certificate was read once at start and
// the sidecar never got through again.)
func TestEtcdClientCertificateRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	e := newTLSEtcd(t)
	ca1, ca2 := testcert.NewCA(t, e.dir, "client1"), testcert.NewCA(t, e.dir, "client2")
	e.start(ca1)
	e.setup(ctx, ca1, grantNamespace(ctx, "baton-tts", "tts", clientv3.PermissionType(clientv3.PermReadWrite), "sidecar-tts", "sc-pw")...)

	certFile, keyFile := filepath.Join(e.dir, "sidecar.pem"), filepath.Join(e.dir, "sidecar-key.pem")
	ca1.Client(t, "sidecar-tts").Write(t, certFile, keyFile)
	sc := sidecartest.StartSidecar(t, "", "", sidecar.Config{
		Etcd: etcdconn.Config{Endpoints: []string{e.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw",
			CACert: e.serverCA.CertFile, Cert: certFile, Key: keyFile},
		Queues: []string{"tts"},
	})
	submit(t, sc, &batonv1.TaskSpec{Id: "before", Payload: payload(t, map[string]any{})})
	if task := next(t, sc, 20*time.Second, ""); task == nil || task.Id != "before" {
		t.Fatalf("before the rotation: got %v", task)
	} else {
		complete(t, sc, task)
	}

	// Rotate: new files from CA 2 (written whole, then renamed over the
	// old ones, as a Secret volume's update does), etcd trusting CA 2 only.
	next := ca2.Client(t, "sidecar-tts")
	next.Write(t, certFile+".new", keyFile+".new")
	for _, f := range []string{certFile, keyFile} {
		if err := os.Rename(f+".new", f); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()
	e.start(ca2)
	restarted := time.Now()

	// The sidecar answers UNAVAILABLE until it has connected again.
	deadline := time.Now().Add(60 * time.Second)
	var err error
	for {
		_, err = sc.Client.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: []*batonv1.TaskSpec{{Id: "after", Payload: payload(t, map[string]any{})}}}))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling for the reconnection with a deadline
	}
	if err != nil {
		t.Fatalf("the sidecar did not reach etcd again with its rotated certificate within 60s: %v", err)
	}
	t.Logf("submitted through the sidecar %v after etcd restarted", time.Since(restarted))
	resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(30 * time.Second)}))
	if err != nil || resp.Msg.GetTask().GetId() != "after" {
		t.Fatalf("after the rotation: next = %v, %v; want the task \"after\"", resp, err)
	}
	complete(t, sc, resp.Msg.GetTask())
}
