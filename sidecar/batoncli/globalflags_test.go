package batoncli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
)

// Regression (codebase-shape issue, item 5): the connection flags work
// where the usage texts show them, after the command, as well as before
// it; after the command wins.
func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	ns := sidecartest.Namespace(t)
	if _, errOut, code := run(t, ns, "queues", "pause", "tts"); code != 0 {
		t.Fatalf("pause: exit %d: %s", code, errOut)
	}
	baton := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := batoncli.New(&out, &errb).RunContext(context.Background(), append([]string{"baton"}, args...))
		return out.String(), errb.String(), err
	}
	for _, args := range [][]string{
		{"queues", "list", "--endpoints", endpoint, "--namespace", ns},
		{"--endpoints", endpoint, "queues", "list", "--namespace", ns},
		{"--endpoints", "127.0.0.1:1", "--namespace", "other", "queues", "list", "--endpoints", endpoint, "--namespace", ns},
	} {
		out, errOut, err := baton(args...)
		if err != nil || !strings.Contains(out, "tts") {
			t.Errorf("baton %v: %v %s\n%s", args, err, errOut, out)
		}
	}
	// A flag on the command line beats a BATON_* variable, before the
	// command or after it.
	t.Setenv("BATON_NAMESPACE", "other")
	for _, args := range [][]string{
		{"--endpoints", endpoint, "--namespace", ns, "queues", "list"},
		{"queues", "list", "--endpoints", endpoint, "--namespace", ns},
	} {
		out, errOut, err := baton(args...)
		if err != nil || !strings.Contains(out, "tts") {
			t.Errorf("BATON_NAMESPACE=other baton %v: %v %s\n%s", args, err, errOut, out)
		}
	}
	t.Setenv("BATON_NAMESPACE", ns)
	if out, errOut, err := baton("queues", "list", "--endpoints", endpoint); err != nil || !strings.Contains(out, "tts") {
		t.Errorf("BATON_NAMESPACE=ns baton queues list: %v %s\n%s", err, errOut, out)
	}
	// The checks apply after the command too.
	if _, _, err := baton("tasks", "list", "--endpoints", endpoint, "--namespace", "baton/x"); err == nil || !strings.Contains(err.Error(), "namespace:") {
		t.Errorf("a bad --namespace after the command: %v", err)
	}
	// No backquoted phrase in a usage text becomes a placeholder.
	out, _, _ := baton("sidecar", "--help")
	if strings.Contains(out, "--label baton") || strings.Contains(out, "--etcd-password-file baton") {
		t.Errorf("a usage text's backquotes became a placeholder:\n%s", out)
	}
}
