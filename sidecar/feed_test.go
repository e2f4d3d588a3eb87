package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// runSubmitRole runs the baton command line with the arguments in
// BATON_TEST_ARGS (separated by newlines), as the binary would, so that a
// test can kill it with SIGKILL.
func runSubmitRole() {
	args := append([]string{"baton"}, strings.Split(os.Getenv("BATON_TEST_ARGS"), "\n")...)
	if err := batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// feedFile writes a JSONL file of n GLM-TTS-like lines with ids utt_00000…
// and returns its path and the ids.
func feedFile(t *testing.T, n int) (string, []string) {
	t.Helper()
	var b strings.Builder
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("utt_%05d", i)
		fmt.Fprintf(&b, `{"uttid": %q, "prompt_speech": "prompts/spk_%02d.wav", "syn_text": "line %d of the corpus"}`+"\n", ids[i], i%10, i)
	}
	p := filepath.Join(t.TempDir(), "corpus.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, ids
}

// unfinishedWatch follows every task state of a namespace in etcd, one
// revision at a time, and records the most tasks unfinished (not DONE,
// DEAD or CANCELLED) at any revision: what bounded feeding must keep at or
// below --max-pending.
type unfinishedWatch struct {
	mu      sync.Mutex
	states  map[string]string
	most    int
	changed chan struct{}
}

func watchUnfinished(t *testing.T, cli *clientv3.Client) *unfinishedWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cli.Get(ctx, "state/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("state/ before the test: %v, %v", resp, err)
	}
	u := &unfinishedWatch{states: map[string]string{}, changed: make(chan struct{}, 1)}
	// A task submitted ready has no state/<id> until it first moves: its
	// spec's creation (task/<id>, which sorts right after state/) is when
	// it becomes unfinished.
	wch := cli.Watch(ctx, "state/", clientv3.WithRange(clientv3.GetPrefixRangeEnd("task/")), clientv3.WithRev(resp.Header.Revision+1))
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for wr := range wch {
			u.mu.Lock()
			var rev int64
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision != rev {
					u.record()
					rev = ev.Kv.ModRevision
				}
				if id, ok := strings.CutPrefix(string(ev.Kv.Key), "task/"); ok {
					if ev.Type == clientv3.EventTypePut && ev.Kv.Version == 1 {
						u.states[id] = "PENDING"
					}
					continue
				}
				id := strings.TrimPrefix(string(ev.Kv.Key), "state/")
				if ev.Type == clientv3.EventTypeDelete {
					u.states[id] = "REMOVED"
					continue
				}
				var st struct {
					State string `json:"state"`
				}
				if err := json.Unmarshal(ev.Kv.Value, &st); err != nil {
					u.states[id] = "?" + err.Error()
					continue
				}
				u.states[id] = st.State
			}
			u.record()
			u.mu.Unlock()
			select {
			case u.changed <- struct{}{}:
			default:
			}
		}
	}()
	return u
}

// record notes the count of unfinished tasks. Called with mu held.
func (u *unfinishedWatch) record() {
	n := 0
	for _, s := range u.states {
		if s != "DONE" && s != "DEAD" && s != "CANCELLED" && s != "REMOVED" {
			n++
		}
	}
	u.most = max(u.most, n)
}

// waitFor waits until cond holds on the states seen, or fails the test.
func (u *unfinishedWatch) waitFor(t *testing.T, what string, d time.Duration, cond func(states map[string]string) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		u.mu.Lock()
		ok := cond(u.states)
		n := len(u.states)
		u.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-u.changed:
		case <-deadline:
			t.Fatalf("%s: not within %v (%d tasks seen)", what, d, n)
		}
	}
}

func (u *unfinishedWatch) max() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.most
}

func allDone(n int) func(map[string]string) bool {
	return func(states map[string]string) bool {
		if len(states) != n {
			return false
		}
		for _, s := range states {
			if s != "DONE" {
				return false
			}
		}
		return true
	}
}

// drainers are workers that complete every task they get, each exactly
// once, until stopped.
type drainers struct {
	mu        sync.Mutex
	completed map[string]int
	stop      func()
	errs      chan error
}

func startDrainers(t *testing.T, sc *sidecartest.Sidecar, n int, completed map[string]int) *drainers {
	ctx, cancel := context.WithCancel(context.Background())
	d := &drainers{completed: completed, errs: make(chan error, n)}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := d.one(ctx, sc, 500*time.Millisecond); err != nil && ctx.Err() == nil {
					d.errs <- err
					return
				}
			}
		}()
	}
	d.stop = func() {
		cancel()
		wg.Wait()
		close(d.errs)
		for err := range d.errs {
			t.Error(err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			d.stop()
		}
	})
	return d
}

// one claims a task, if one comes within wait, and completes it.
func (d *drainers) one(ctx context.Context, sc *sidecartest.Sidecar, wait time.Duration) error {
	resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Wait: durationpb.New(wait)}))
	if connect.CodeOf(err) == connect.CodeUnavailable {
		return nil // etcd slow to answer (a loaded machine): retry, as workers do
	}
	if err != nil {
		return fmt.Errorf("next: %w", err)
	}
	task := resp.Msg.GetTask()
	if task == nil {
		return nil
	}
	res, err := structpb.NewStruct(map[string]any{"path": "/data/out/" + task.Id + ".wav"})
	if err != nil {
		return err
	}
	// Not cancelled with the drainers: a completion that etcd took is
	// counted.
	if _, err := sc.Client.Tasks.Complete(context.Background(), connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: res})); err != nil {
		return fmt.Errorf("complete %s: %w", task.Id, err)
	}
	d.mu.Lock()
	d.completed[task.Id]++
	d.mu.Unlock()
	return nil
}

// Big batches issue, item 1: `baton submit --max-pending 40` of 300 lines
// never has more than 40 of them unfinished in etcd (seen by a watch of
// every state, revision by revision), and every line ends DONE, completed
// once.
func TestSubmitMaxPending(t *testing.T) {
	sc, ns := start(t, sidecar.Config{Queues: []string{"tts"}})
	file, ids := feedFile(t, 300)
	u := watchUnfinished(t, sidecartest.Client(t, endpoint, ns))
	completed := map[string]int{}
	d := startDrainers(t, sc, 4, completed)

	var out, errOut bytes.Buffer
	err := batoncli.New(&out, &errOut).RunContext(context.Background(),
		[]string{"baton", "--endpoints", endpoint, "--namespace", ns, "submit", "--queue", "tts", "--max-pending", "40", file})
	if err != nil {
		t.Fatalf("baton submit: %v\n%s%s", err, out.String(), errOut.String())
	}
	u.waitFor(t, "every line DONE", time.Minute, allDone(len(ids)))
	d.stop()
	for _, id := range ids {
		if completed[id] != 1 {
			t.Fatalf("%s completed %d times", id, completed[id])
		}
	}
	if m := u.max(); m > 40 {
		t.Fatalf("%d tasks of the file unfinished at once in etcd; --max-pending 40", m)
	}
	if !strings.Contains(out.String(), "300 tasks, 300 created, 0 existing") || !strings.Contains(out.String(), "at most 40 unfinished at once") {
		t.Fatalf("summary: %s", out.String())
	}
	t.Logf("at most %d unfinished at once", u.max())
}

// Big batches issue, item 1: a `baton submit --max-pending 40` process
// killed with SIGKILL while it waits for room, after some of its tasks
// finished, is run again: it goes on from where the file stands in etcd.
// Every line ends DONE, created once and completed once, and at no
// revision were more than 40 unfinished.
func TestSubmitMaxPendingResumesAfterKill(t *testing.T) {
	sc, ns := start(t, sidecar.Config{Queues: []string{"tts"}})
	file, ids := feedFile(t, 300)
	u := watchUnfinished(t, sidecartest.Client(t, endpoint, ns))
	args := []string{"--endpoints", endpoint, "--namespace", ns, "submit", "--queue", "tts", "--max-pending", "40", file}

	submit, err := childproc.Start(childproc.Config{
		Name:     "baton submit",
		Exe:      childproc.Exe{Path: os.Args[0], Args: []string{"-test.run=^$"}},
		Env:      []string{"BATON_TEST_ROLE=submit", "BATON_TEST_ARGS=" + strings.Join(args, "\n")},
		StderrTo: os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(submit.Kill)
	count := func(n int) func(map[string]string) bool {
		return func(states map[string]string) bool { return len(states) >= n }
	}
	u.waitFor(t, "the first 40 tasks written", time.Minute, count(40))
	// Finish 15 of them: the process feeds 15 more, then waits again.
	completed := map[string]int{}
	d := &drainers{completed: completed}
	for len(completed) < 15 {
		if err := d.one(context.Background(), sc, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	u.waitFor(t, "15 more tasks written", time.Minute, count(55))
	submit.Kill()
	u.mu.Lock()
	written := len(u.states)
	u.mu.Unlock()
	if written != 55 {
		t.Fatalf("%d tasks written before the kill, want 55 (40, then 15 as 15 finished)", written)
	}

	dr := startDrainers(t, sc, 4, completed)
	var out, errOut bytes.Buffer
	err = batoncli.New(&out, &errOut).RunContext(context.Background(), append([]string{"baton"}, args...))
	if err != nil {
		t.Fatalf("baton submit again: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "300 tasks, 245 created, 55 existing") {
		t.Fatalf("summary of the second run: %s", out.String())
	}
	u.waitFor(t, "every line DONE", time.Minute, allDone(len(ids)))
	dr.stop()
	for _, id := range ids {
		if completed[id] != 1 {
			t.Fatalf("%s completed %d times", id, completed[id])
		}
	}
	if m := u.max(); m > 40 {
		t.Fatalf("%d tasks of the file unfinished at once in etcd; --max-pending 40", m)
	}
}
