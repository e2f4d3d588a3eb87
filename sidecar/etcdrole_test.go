package sidecar_test

import (
	"context"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/internal/etcdutil"
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
	srv, err := embedetcd.Start(ctx, embedetcd.Config{RootPassword: "root-pw"})
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
		Etcd:   etcdutil.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw"},
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
	op, err := etcdutil.New(etcdutil.Config{Endpoints: []string{srv.Endpoint()}, Namespace: "tts", Username: "sidecar-tts", Password: "sc-pw"})
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
