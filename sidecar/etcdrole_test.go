package sidecar_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/testcert"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Hardening issue, "etcd that can confine a deployment": a sidecar needs
// nothing in etcd beyond read and write on its namespace's prefix (the
// role docs/operations.md gives): with authentication on and only that
// role, it serves tasks, runs the scheduler, takes locks, follows the
// operators' audit records, and cannot read another deployment's keys.
func TestSidecarRunsWithANamespaceRoleOnly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{RootPassword: "root-pw", BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // after the sidecar's own cleanup
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Username: "root", Password: "root-pw", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	// The role of docs/operations.md: readwrite on "<namespace>/".
	for _, step := range []func() error{
		func() error { _, err := root.RoleAdd(ctx, "baton-tts"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "baton-tts", "tts/", clientv3.GetPrefixRangeEnd("tts/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserAdd(ctx, "sidecar-tts", "sc-pw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "sidecar-tts", "baton-tts"); return err },
		func() error { _, err := root.Put(ctx, "other/secret", "x"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	sc := sidecartest.StartSidecar(t, "", "", sidecar.Config{
		Etcd:   etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw"},
		Queues: []string{"tts"},
	})
	submit(t, sc, &batonv1.TaskSpec{Id: "confined", Payload: payload(t, map[string]any{})})
	task := next(t, sc, 20*time.Second, "")
	if task == nil || task.Id != "confined" {
		t.Fatalf("a sidecar with the namespace role only got %v", task)
	}
	complete(t, sc, task)
	if !sc.Dispatcher().Leading() {
		t.Fatal("the sidecar is not the scheduler: the election needs more than the namespace role")
	}

	// The operator CLI with the same role: its actions and their audit
	// records sit under the prefix, and the scheduler follows them there
	// (it moves the log's cursor, auditcursor, once it has logged one).
	op, err := etcdconn.New(etcdconn.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	aw, err := audit.NewWriter(op.KV, audit.WriterConfig{Actor: audit.LocalActor("sidecar-tts")})
	if err != nil {
		t.Fatal(err)
	}
	opStore, err := workqueue.NewStore(op.KV, workqueue.Config{Audit: aw})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := opStore.Pause(ctx, "tts"); err != nil || !changed {
		t.Fatalf("an audited pause with the namespace role: %v %v", changed, err)
	}
	waitFor(t, 20*time.Second, "the scheduler logged the pause", func() bool {
		resp, err := op.Get(ctx, "auditcursor")
		return err == nil && len(resp.Kvs) == 1
	})

	limited, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Username: "sidecar-tts", Password: "sc-pw", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer limited.Close()
	if _, err := limited.Get(ctx, "other/secret"); err == nil {
		t.Fatal("the namespace role read another deployment's key")
	}
}

// cliRun runs the baton command line in the process and returns its
// output, its diagnostics and whether it succeeded.
func cliRun(ctx context.Context, args ...string) (string, string, bool) {
	var out, errb bytes.Buffer
	code := batoncli.Main(ctx, append([]string{"baton"}, args...), nil, &out, &errb)
	return out.String(), errb.String(), code == 0
}

// Hardening issue, "etcd that can confine a deployment", with everything
// on: etcd requires a client certificate of a trusted CA
// (--client-cert-auth) and authentication. The sidecar, the operators' CLI
// and a read-only viewer each have their own user, role
// (docs/operations.md, "Least privilege") and client certificate: each
// does its job, none reaches another deployment's keys, and the viewer
// cannot change anything.
func TestLeastPrivilegeRolesWithClientTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	e := newTLSEtcd(t)
	ca := testcert.NewCA(t, e.dir, "clients")
	e.start(ca)
	rw, ro := clientv3.PermissionType(clientv3.PermReadWrite), clientv3.PermissionType(clientv3.PermRead)
	var steps []func(*clientv3.Client) error
	steps = append(steps, grantNamespace(ctx, "baton-tts", "tts", rw, "sidecar-tts", "sc-pw")...)
	steps = append(steps, grantNamespace(ctx, "baton-tts-operator", "tts", rw, "operator-tts", "op-pw")...)
	steps = append(steps, grantNamespace(ctx, "baton-tts-ro", "tts", ro, "viewer-tts", "view-pw")...)
	steps = append(steps, func(root *clientv3.Client) error { _, err := root.Put(ctx, "other/task/secret", "x"); return err })
	e.setup(ctx, ca, steps...)

	// Each party's files: client certificate, key, password.
	files := func(user, password string) []string {
		cert, key, pw := filepath.Join(e.dir, user+".pem"), filepath.Join(e.dir, user+"-key.pem"), filepath.Join(e.dir, user+".password")
		ca.Client(t, user).Write(t, cert, key)
		if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--endpoints", e.Endpoint(), "--etcd-cacert", e.serverCA.CertFile, "--etcd-cert", cert, "--etcd-key", key,
			"--etcd-user", user, "--etcd-password-file", pw}
	}
	operator, viewer := files("operator-tts", "op-pw"), files("viewer-tts", "view-pw")
	sidecarFiles := files("sidecar-tts", "sc-pw")
	sc := sidecartest.StartSidecar(t, "", "", sidecar.Config{
		Etcd: etcdconn.Config{Endpoints: []string{e.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw",
			CACert: e.serverCA.CertFile, Cert: sidecarFiles[5], Key: sidecarFiles[7]},
		Queues: []string{"tts"},
	})

	// The operator submits, and the sidecar hands the task out.
	jsonl := filepath.Join(e.dir, "batch.jsonl")
	if err := os.WriteFile(jsonl, []byte(`{"id": "op-1", "syn_text": "a"}`+"\n"+`{"id": "op-2", "syn_text": "b"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	as := func(who []string, ns string, args ...string) (string, string, bool) {
		return cliRun(ctx, append(append(append([]string(nil), who...), "--namespace", ns), args...)...)
	}
	if out, errOut, ok := as(operator, "tts", "submit", "--queue", "tts", "--batch", "b1", jsonl); !ok {
		t.Fatalf("operator submit: %s%s", out, errOut)
	}
	task := next(t, sc, 20*time.Second, "")
	if task == nil || task.Id != "op-1" {
		t.Fatalf("the sidecar got %v, want op-1", task)
	}
	complete(t, sc, task)
	// Everything else the operators' CLI does in its namespace.
	for _, args := range [][]string{
		{"tasks", "list"}, {"tasks", "get", "op-1"}, {"tasks", "cancel", "op-2"}, {"tasks", "retry", "op-2"},
		{"queues", "pause", "tts"}, {"queues", "resume", "tts"}, {"queues", "list"},
		{"workers", "list"}, {"locks", "list"}, {"config", "set", "global", jsonl + ".cfg"}, {"config", "get", "global"},
		{"wait", "--batch", "b1", "--timeout", "1ms"},
	} {
		if args[0] == "config" && args[1] == "set" {
			if err := os.WriteFile(args[3], []byte(`{"sample_rate": 24000}`), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if out, errOut, ok := as(operator, "tts", args...); !ok && args[0] != "wait" {
			t.Errorf("operator %v: %s%s", args, out, errOut)
		} else if args[0] == "wait" && strings.Contains(errOut, "permission denied") {
			t.Errorf("operator %v: %s", args, errOut)
		}
	}

	// The viewer reads, and is refused every change.
	for _, args := range [][]string{{"tasks", "list"}, {"queues", "list"}, {"workers", "list"}, {"config", "get", "global"}} {
		if out, errOut, ok := as(viewer, "tts", args...); !ok {
			t.Errorf("viewer %v: %s%s", args, out, errOut)
		}
	}
	for _, args := range [][]string{{"queues", "pause", "tts"}, {"tasks", "cancel", "op-2"}, {"submit", "--queue", "tts", jsonl}} {
		if _, errOut, ok := as(viewer, "tts", args...); ok || !strings.Contains(errOut, "permission denied") {
			t.Errorf("viewer %v: succeeded=%v %s; want permission denied", args, ok, errOut)
		}
	}

	// Nobody reaches another deployment's namespace.
	for who, creds := range map[string][]string{"operator": operator, "viewer": viewer, "sidecar": sidecarFiles} {
		if out, errOut, ok := as(creds, "other", "tasks", "get", "secret"); ok || !strings.Contains(errOut, "permission denied") {
			t.Errorf("%s read namespace other: %s%s", who, out, errOut)
		}
	}
	// Nor without a certificate of the trusted CA, password or not.
	stranger := testcert.NewCA(t, e.dir, "stranger")
	strangerFiles := append([]string(nil), operator...)
	strangerFiles[5], strangerFiles[7] = filepath.Join(e.dir, "stranger.pem"), filepath.Join(e.dir, "stranger-key.pem")
	stranger.Client(t, "operator-tts").Write(t, strangerFiles[5], strangerFiles[7])
	if _, _, ok := as(strangerFiles, "tts", "tasks", "list"); ok {
		t.Error("a client certificate of an untrusted CA got in with the operator's password")
	}
}
