package batoncli_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// Regression (hardening issue, item 9): settings that silently did
// something else are refused, naming the flag.
func TestMisconfigurationIsRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	cases := []struct {
		ns   string
		args []string
		want string
	}{
		{"baton/x", []string{"tasks", "list"}, "namespace:"},
		{"ok", []string{"--etcd-key", "/nonexistent.key", "tasks", "list"}, "etcd-cert, etcd-key:"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--socket-mode", "0777"}, "socket-mode: 0777 lets every local user"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--socket-mode", "0000"}, "socket-mode: 0000"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--socket-mode", "01777"}, "socket-mode:"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--admin-cert", "/etc/baton/tls.crt"}, "admin-cert, admin-key: give both"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--admin-key", "/etc/baton/tls.key"}, "admin-cert, admin-key: give both"},
		{"ok", []string{"dev", "--data-dir", filepath.Dir(sock), "--socket", sock, "--admin-client-cacert", "/etc/baton/ca.pem"}, "admin-client-cacert: needs --admin-cert"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--admin-addr", "", "--admin-cert", "c", "--admin-key", "k"}, "admin-cert: the admin server is off"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--admin-addr", "", "--ui"}, "ui: the page is served by the admin server, which is off"},
		{"ok", []string{"sidecar", "--socket", sock, "--queue", "tts", "--ui", "--ui-actions", "yes"}, `ui-actions: "yes" is not auto, on or off`},
	}
	for _, c := range cases {
		_, errOut, code := run(t, c.ns, c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s %v: exit %d, stderr %q; want a refusal naming %q", c.ns, c.args, code, errOut, c.want)
		}
	}
}
