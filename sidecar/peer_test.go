package sidecar_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/batonhq/baton/sidecar"
)

// asUser runs a Python one-liner as uid:gid that sends one Connect JSON
// call over the socket and prints the status line, or "closed".
func asUser(t *testing.T, uid, gid uint32, socket string) string {
	t.Helper()
	script := `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
    s.sendall(b"POST /baton.v1.TaskService/Next HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    data = s.recv(64)
    print(data.split(b"\r\n")[0].decode() if data else "closed")
except PermissionError:
    print("permission denied")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
`
	py := "/usr/bin/python3" // reachable by other users, unlike a per-user install
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3 to run a client as another user")
	}
	// Let other users reach the socket's directory (made 0700).
	if err := os.Chmod(filepath.Dir(socket), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", script, socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as %d:%d: %v\n%s", uid, gid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Hardening issue, caller identity: the socket is checked against the
// peer's credentials on every connection, whatever its file mode; and it
// is created with its final mode (never the umask's).
func TestSocketPeerCredentials(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	// A mode that lets everyone reach the socket file (the CLI refuses
	// it; the library allows it so that this test can get past the file
	// mode to the peer check).
	sc, _ := start(t, sidecar.Config{SocketMode: 0o666})
	fi, err := os.Stat(sc.Socket)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v %v, want 0666", fi.Mode(), err)
	}
	if got := asUser(t, 0, 0, sc.Socket); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("the sidecar's own user: %q", got)
	}
	if got := asUser(t, 65534, 65534, sc.Socket); got != "closed" {
		t.Fatalf("another user: %q, want the connection closed", got)
	}

	// Allowed by group.
	sc2, _ := start(t, sidecar.Config{SocketMode: 0o666, AllowGIDs: []uint32{65534}})
	if got := asUser(t, 65534, 65534, sc2.Socket); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("a user of an allowed group: %q", got)
	}
	// The default mode keeps other users out at the file already.
	sc3, _ := start(t, sidecar.Config{})
	if fi, err := os.Stat(sc3.Socket); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("default socket mode %v %v, want 0660", fi.Mode(), err)
	}
	if got := asUser(t, 65534, 65534, sc3.Socket); got != "permission denied" {
		t.Fatalf("another user with mode 0660: %q", got)
	}
}
