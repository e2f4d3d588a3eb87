// Package etcdconn says how a Baton process reaches etcd — endpoints,
// the deployment's namespace, TLS and user/password auth — and dials a
// client that sees only that namespace. Config is sidecar.Config's Etcd,
// exported so that code outside this module (a user's tests with
// sidecartest, a tool) can fill it in; New is how the sidecar, every
// command and the tools build their etcd client.
package etcdconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/internal/names"
	"github.com/batonhq/baton/sidecar/internal/tlsfile"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Config says how to reach etcd. The command line's --endpoints,
// --namespace, --etcd-user, --etcd-password, --etcd-cacert, --etcd-cert and
// --etcd-key (and their BATON_* variables) fill it in.
type Config struct {
	// Endpoints are etcd's client addresses, host:port or URLs. At least
	// one is required.
	Endpoints []string
	// Namespace prefixes every key ("baton" → "baton/"). Required.
	Namespace string
	// DialTimeout bounds the first connection. Default 5s.
	DialTimeout time.Duration
	// Username and Password authenticate to etcd; empty: no auth.
	Username string
	Password string
	// CACert is the CA certificate file that etcd's server certificates
	// are checked against, read once.
	CACert string
	// Cert and Key are the client certificate and key files. They are
	// read again on every TLS handshake and used when their contents
	// changed (tlsfile.KeyPair), so a rotated certificate needs no
	// restart: the next connection to etcd presents it.
	Cert string
	Key  string
	// Logger receives the failures of certificate reloads. Default:
	// discard.
	Logger *slog.Logger
	// DialOptions are added to the etcd client's gRPC options (the
	// sidecar's metrics interceptors).
	DialOptions []grpc.DialOption
}

// Prefix returns the key prefix of the namespace.
func (c Config) Prefix() string { return strings.TrimSuffix(c.Namespace, "/") + "/" }

// Validate reports the first setting that is wrong, naming its flag. A
// client key or certificate needs the other: either alone used to connect
// without a client certificate, silently.
func (c Config) Validate() error {
	if strings.Trim(c.Namespace, "/") == "" {
		return fmt.Errorf("namespace: must not be empty")
	}
	if (c.Cert == "") != (c.Key == "") {
		return fmt.Errorf("etcd-cert, etcd-key: give both (a client certificate and its key) or neither")
	}
	return nil
}

// ValidateNamespace reports whether ns can name a deployment (the
// --namespace flag): one name of letters, digits and "_.-", at most 64
// bytes. A "/" would put one deployment inside another's key prefix, and
// inside the etcd role that confines it.
func ValidateNamespace(ns string) error {
	if err := names.Check(strings.TrimSuffix(ns, "/"), 64, "_.-"); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return nil
}

// New connects to etcd and returns a client whose KV, Watcher and Lease
// see only the namespace (its Maintenance and Auth APIs are etcd's, not
// namespaced). It checks c first (Validate) and does not wait for etcd to
// answer: Ping does. The caller closes the client.
func New(c Config) (*clientv3.Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, fmt.Errorf("endpoints: at least one etcd endpoint is required")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             c.Username,
		Password:             c.Password,
		Logger:               zap.NewNop(),
		DialOptions:          c.DialOptions,
	}
	if cc.DialTimeout == 0 {
		cc.DialTimeout = 5 * time.Second
	}
	if c.CACert != "" || c.Cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CACert != "" {
			pem, err := os.ReadFile(c.CACert)
			if err != nil {
				return nil, fmt.Errorf("etcd-cacert: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcd-cacert: no certificate in %s", c.CACert)
			}
		}
		if c.Cert != "" {
			kp, err := tlsfile.LoadKeyPair(c.Cert, c.Key, c.Logger)
			if err != nil {
				return nil, fmt.Errorf("etcd-cert, etcd-key: %w", err)
			}
			tc.GetClientCertificate = kp.GetClientCertificate
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, err
	}
	p := c.Prefix()
	cli.KV = namespace.NewKV(cli.KV, p)
	cli.Watcher = namespace.NewWatcher(cli.Watcher, p)
	cli.Lease = namespace.NewLease(cli.Lease, p)
	return cli, nil
}

// Ping checks that etcd answers within timeout, so commands fail with a
// clear message instead of waiting for a server that is not there.
func Ping(ctx context.Context, cli *clientv3.Client, endpoints []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Get(ctx, "ping", clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd at %s did not answer within %v: %w", strings.Join(endpoints, ","), timeout, err)
	}
	return nil
}
