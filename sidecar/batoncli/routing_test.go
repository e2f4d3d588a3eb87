package batoncli_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

func writeFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lines.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func store(t *testing.T, ns string) *workqueue.Store {
	t.Helper()
	s, err := workqueue.NewStore(sidecartest.Client(t, endpoint, ns).KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSubmitAffinityAndRequire: --affinity-field takes each task's key
// from its line (a line without the field, or with null, has none) and
// --require puts the labels on every task; tasks get shows both.
func TestSubmitAffinityAndRequire(t *testing.T) {
	ns := sidecartest.Namespace(t)
	file := writeFile(t,
		`{"uttid":"u1","prompt_speech":"spk/alice.wav","syn_text":"one"}`,
		`{"uttid":"u2","prompt_speech":"spk/bob.wav","syn_text":"two"}`,
		`{"uttid":"u3","syn_text":"no prompt"}`,
		`{"uttid":"u4","prompt_speech":null,"syn_text":"null prompt"}`,
	)
	out, errOut, code := run(t, ns, "submit", "--queue", "tts", "--affinity-field", "prompt_speech",
		"--require", "model=indextts2", "--require", "gpu=a100", file)
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "4 created") || !strings.Contains(out, ", 2 with affinity (prompt_speech), require gpu=a100,model=indextts2") {
		t.Errorf("submit summary %q lacks the counts, affinity and require", out)
	}
	s := store(t, ns)
	wantReq := map[string]string{"model": "indextts2", "gpu": "a100"}
	for id, wantAff := range map[string]string{"u1": "spk/alice.wav", "u2": "spk/bob.wav", "u3": "", "u4": ""} {
		got, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		if got.Status.Affinity != wantAff || !maps.Equal(got.Status.Require, wantReq) {
			t.Errorf("%s: affinity %q, require %v; want %q, %v", id, got.Status.Affinity, got.Status.Require, wantAff, wantReq)
		}
		if !strings.Contains(string(got.Payload), `"syn_text"`) {
			t.Errorf("%s: payload %s lost its fields", id, got.Payload)
		}
	}

	out, errOut, code = run(t, ns, "tasks", "get", "u1")
	if code != 0 {
		t.Fatalf("tasks get: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"affinity:  spk/alice.wav\n", "require:   gpu=a100,model=indextts2\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("tasks get output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = run(t, ns, "tasks", "get", "u3")
	if strings.Contains(out, "affinity:") {
		t.Errorf("tasks get of a task without affinity shows one:\n%s", out)
	}
	out, errOut, code = run(t, ns, "tasks", "get", "-o", "json", "u2")
	if code != 0 {
		t.Fatalf("tasks get -o json: exit %d\n%s", code, errOut)
	}
	var tj struct {
		Status struct {
			Affinity string            `json:"affinity"`
			Require  map[string]string `json:"require"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &tj); err != nil {
		t.Fatalf("tasks get -o json: %v\n%s", err, out)
	}
	if tj.Status.Affinity != "spk/bob.wav" || !maps.Equal(tj.Status.Require, wantReq) {
		t.Errorf("tasks get -o json: %+v", tj.Status)
	}
}

// TestSubmitAffinityFieldBadLines: a value that is not a string, or a key
// over the limit, is a bad line reported with its number, and nothing of
// the file is written.
func TestSubmitAffinityFieldBadLines(t *testing.T) {
	ns := sidecartest.Namespace(t)
	file := writeFile(t,
		`{"uttid":"u1","prompt_speech":"spk/alice.wav"}`,
		`{"uttid":"u2","prompt_speech":7}`,
		`{"uttid":"u3"}`,
		`{"uttid":"u4","prompt_speech":{"path":"spk/bob.wav"}}`,
		`{"uttid":"u5","prompt_speech":"`+strings.Repeat("x", workqueue.MaxAffinityLen+1)+`"}`,
		`{"uttid":"u6","prompt_speech":["a"]}`,
	)
	_, errOut, code := run(t, ns, "submit", "--queue", "tts", "--affinity-field", "prompt_speech", file)
	if code != 1 {
		t.Fatalf("submit: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{
		file + `:2: affinity-field "prompt_speech": is a number, not a string`,
		file + `:4: affinity-field "prompt_speech": is an object, not a string`,
		file + ":5: affinity: is 257 bytes, over the limit of 256",
		file + `:6: affinity-field "prompt_speech": is an array, not a string`,
		"4 bad lines; nothing was written",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	for _, good := range []string{":1:", ":3:"} {
		if strings.Contains(errOut, file+good) {
			t.Errorf("good line %s reported:\n%s", good, errOut)
		}
	}
	s := store(t, ns)
	for _, id := range []string{"u1", "u3"} {
		if _, err := s.Get(context.Background(), id); !errors.Is(err, workqueue.ErrNotFound) {
			t.Errorf("%s: %v; want nothing written", id, err)
		}
	}
}

// TestSubmitAffinityFieldNowhere: a field no line has is allowed (no
// affinity) but said on stderr, since it is most likely misspelt.
func TestSubmitAffinityFieldNowhere(t *testing.T) {
	ns := sidecartest.Namespace(t)
	file := writeFile(t, `{"uttid":"u1","prompt_speech":"spk/alice.wav"}`)
	out, errOut, code := run(t, ns, "submit", "--queue", "tts", "--affinity-field", "prompt_speach", file)
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, `no line has a value in --affinity-field "prompt_speach"`) || !strings.Contains(out, ", 0 with affinity (prompt_speach)") {
		t.Errorf("stdout %q, stderr %q; want the empty field noted", out, errOut)
	}
}

// TestSubmitBadRequire: a bad --require is a usage error naming the pair,
// before the file is read.
func TestSubmitBadRequire(t *testing.T) {
	ns := sidecartest.Namespace(t)
	file := writeFile(t, `{"uttid":"u1"}`)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--require", "model"}, `require[0]: "model" is not KEY=VALUE`},
		{[]string{"--require", "model=indextts2", "--require", "=x"}, `require[1]: "=x" is not KEY=VALUE`},
		{[]string{"--require", "gpu model=a100"}, `require[0]: label "gpu model":`},
		{[]string{"--require", "model=" + strings.Repeat("v", workqueue.MaxLabelValueLen+1)}, `require[0]: label "model": value is 257 bytes`},
		{[]string{"--require", "model=indextts2", "--require", "model=glmtts"}, "require[1]: model=glmtts conflicts with require[0] model=indextts2"},
	} {
		args := append(append([]string{"submit", "--queue", "tts"}, c.args...), file)
		_, errOut, code := run(t, ns, args...)
		if code != 2 || !strings.Contains(errOut, "baton: submit: "+c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
	// The same pair twice is just that label.
	if _, errOut, code := run(t, ns, "submit", "--queue", "tts", "--require", "model=indextts2", "--require", "model=indextts2", file); code != 0 {
		t.Fatalf("repeated identical --require: exit %d\n%s", code, errOut)
	}
	if _, err := store(t, ns).Get(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
}
