package batoncli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/embedetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestAuthGrant: `baton auth grant --enable-auth` on a new etcd turns
// authentication on and gives the user read-write on its namespace's prefix
// and nothing else; run again (a Helm hook on every upgrade) it succeeds
// and changes nothing; --read-only gives a reader. Bad input names the flag.
func TestAuthGrant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootPW, sidecarPW, readerPW := file("root", "root-pw"), file("sidecar", "sc-pw"), file("reader", "rd-pw")
	grant := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		full := append([]string{"baton", "--endpoints", srv.Endpoint(), "--namespace", "tts", "--etcd-password-file", rootPW, "auth", "grant"}, args...)
		err := batoncli.New(&out, &errb).RunContext(ctx, full)
		return out.String(), errb.String(), err
	}
	for range 2 {
		out, errs, err := grant("--enable-auth", "--user", "sidecar-tts", "--password-file", sidecarPW)
		if err != nil || !strings.Contains(out, "user sidecar-tts: read-write on tts/ (role baton-tts)") {
			t.Fatalf("auth grant: %v\n%s%s", err, out, errs)
		}
	}
	if _, errs, err := grant("--read-only", "--user", "reader-tts", "--password-file", readerPW); err != nil {
		t.Fatalf("auth grant --read-only: %v %s", err, errs)
	}

	as := func(user, pw string) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Username: user, Password: pw, DialTimeout: 20 * time.Second, Logger: zap.NewNop()}) // bcrypt under -race on a busy machine
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	root, sc, rd := as("root", "root-pw"), as("sidecar-tts", "sc-pw"), as("reader-tts", "rd-pw")
	if _, err := root.Put(ctx, "other/secret", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Put(ctx, "tts/k", "v"); err != nil {
		t.Errorf("the sidecar's user cannot write its prefix: %v", err)
	}
	if _, err := sc.Get(ctx, "other/secret"); err == nil {
		t.Error("the sidecar's user read another deployment's key")
	}
	if _, err := sc.Get(ctx, "ttsx/k"); err == nil {
		t.Error("the sidecar's user read a key beside its prefix (ttsx/)")
	}
	if r, err := rd.Get(ctx, "tts/k"); err != nil || len(r.Kvs) != 1 {
		t.Errorf("the reader cannot read the prefix: %v", err)
	}
	if _, err := rd.Put(ctx, "tts/k", "w"); err == nil {
		t.Error("the reader wrote")
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 20 * time.Second, Logger: zap.NewNop()}) // bcrypt under -race on a busy machine
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, "tts/k"); err == nil {
		t.Error("authentication is not on: a client without credentials read a key")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "root", "--password-file", sidecarPW}, "user:"},
		{[]string{"--user", "a:b", "--password-file", sidecarPW}, "user:"},
		{[]string{"--user", "x", "--password-file", filepath.Join(dir, "none")}, "password-file:"},
		{[]string{"--user", "x", "--password-file", file("empty", "")}, "password-file:"},
	} {
		if _, _, err := grant(c.args...); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("auth grant %v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
