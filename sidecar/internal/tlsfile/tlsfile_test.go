package tlsfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/testcert"
	"github.com/batonhq/baton/sidecar/internal/tlsfile"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A rotated pair is served on the next call; a half-written one is not
// (the previous pair is, until the files agree again).
func TestKeyPairFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir, "a")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := ca.Client(t, "first")
	first.Write(t, certFile, keyFile)
	kp, err := tlsfile.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() string {
		t.Helper()
		c, err := kp.GetClientCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if got := leaf(); got != "first" {
		t.Fatalf("loaded %q, want first", got)
	}

	second := ca.Client(t, "second")
	if err := os.WriteFile(certFile, second.Cert, 0o600); err != nil { // the key still the first's
		t.Fatal(err)
	}
	if got := leaf(); got != "first" {
		t.Fatalf("with a certificate beside another's key: %q, want the previous pair (first)", got)
	}
	second.Write(t, certFile, keyFile)
	if got := leaf(); got != "second" {
		t.Fatalf("after rotation: %q, want second", got)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if got := leaf(); got != "second" {
		t.Fatalf("with the key file gone: %q, want the previous pair (second)", got)
	}
}

func TestLoadNamesTheBadFile(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := tlsfile.LoadKeyPair(certFile, keyFile, nil); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Errorf("missing files: %v, want an error naming %s", err, certFile)
	}
	if err := os.WriteFile(certFile, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsfile.LoadCAPool(certFile, nil); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

func TestCAPoolFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	a, b := testcert.NewCA(t, dir, "a"), testcert.NewCA(t, dir, "b")
	file := filepath.Join(dir, "ca.pem")
	copyFile(t, a.CertFile, file)
	p, err := tlsfile.LoadCAPool(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := p.Pool()
	copyFile(t, b.CertFile, file)
	after, _ := p.Pool()
	if before.Equal(after) {
		t.Fatal("the pool did not change with the file")
	}
	if err := os.WriteFile(file, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	kept, _ := p.Pool()
	if !kept.Equal(after) {
		t.Fatal("an unreadable replacement dropped the previous CA")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, readFile(t, from), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
