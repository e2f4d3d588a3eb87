package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// chromium returns the browser to drive, or skips the test when there is
// none and BATON_REQUIRE_CHROMIUM is not set (CI sets it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("BATON_REQUIRE_CHROMIUM") != "" {
		t.Fatal("no chromium on PATH and BATON_REQUIRE_CHROMIUM is set (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium; BATON_REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// The evil task's payload and error: markup that would run script if the
// page ever parsed data as HTML.
const (
	evilText  = `<img src=x onerror="document.title='pwned'">`
	evilError = `<script>document.title='pwned'</script>CUDA error: out of memory`
)

// worker answers the tasks of queue tts through the sidecar's socket like
// a TTS worker: each is completed, except the evil task's first attempt,
// which fails permanently. It runs until ctx ends.
func worker(ctx context.Context, t *testing.T, sc *sidecartest.Sidecar) {
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: "browser-test"}))
	if err != nil || !stream.Receive() {
		if ctx.Err() == nil {
			t.Errorf("attach: %v %v", err, stream.Err())
		}
		return
	}
	defer stream.Close()
	session := stream.Msg().Session
	failed := false
	for ctx.Err() == nil {
		resp, err := sc.Client.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Session: session, Wait: durationpb.New(2 * time.Second)}))
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("next: %v", err)
			}
			return
		}
		task := resp.Msg.Task
		if task == nil {
			continue
		}
		if task.Id == "u-evil" && !failed {
			failed = true
			_, err = sc.Client.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: task.Claim, Error: evilError, Permanent: true}))
		} else {
			res, _ := structpb.NewStruct(map[string]any{"path": "/out/" + task.Id + ".wav"})
			_, err = sc.Client.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: task.Claim, Result: res}))
		}
		if err != nil && ctx.Err() == nil {
			t.Errorf("answering %s: %v", task.Id, err)
			return
		}
	}
}

// TestBrowser drives the page in headless Chromium against a real sidecar
// on an embedded etcd: a batch's progress reaches 100% while a worker
// answers it, a DEAD task's error is shown (as text) and Retry from the
// page brings it back, and a config change appears without a reload.
// With BATON_UI_SCREENSHOTS=DIR it saves the views as PNG files in DIR
// (make screenshots writes docs/ui/).
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	ns := sidecartest.Namespace(t)
	sc := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}, AdminAddr: "127.0.0.1:0", UI: true, WorkerID: "gpu-0"})
	cli := sidecartest.Client(t, endpoint, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// A pinned config, then a batch of 8 utterances.
	docs := configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{})
	doc, err := docs.Set(ctx, "global", []byte(`{"sample_rate":24000,"seed":1,"output_dir":"/out"}`))
	if err != nil {
		t.Fatal(err)
	}
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var specs []workqueue.Spec
	for i := range 7 {
		specs = append(specs, workqueue.Spec{ID: fmt.Sprintf("u-%02d", i), Queue: "tts", Batch: "voices",
			Payload: json.RawMessage(fmt.Sprintf(`{"uttid":"u-%02d","syn_text":"line %d"}`, i, i))})
	}
	evil, _ := json.Marshal(map[string]string{"uttid": "u-evil", "syn_text": evilText})
	specs = append(specs, workqueue.Spec{ID: "u-evil", Queue: "tts", Batch: "voices", Payload: evil, MaxAttempts: 1})
	if _, err := store.Submit(ctx, specs, workqueue.WithPin(workqueue.Pin{Name: "global", Revision: doc.Revision, Document: doc.Data})); err != nil {
		t.Fatal(err)
	}

	shots := os.Getenv("BATON_UI_SCREENSHOTS")
	if shots != "" {
		// More to look at: a second batch on a paused queue no worker
		// serves, part of it cancelled.
		var more []workqueue.Spec
		for i := range 40 {
			more = append(more, workqueue.Spec{ID: fmt.Sprintf("ch1-%02d", i), Queue: "audiobook", Batch: "audiobook-ch1", Payload: json.RawMessage(`{"syn_text":"..."}`)})
		}
		if _, err := store.Submit(ctx, more); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if _, err := store.Cancel(ctx, fmt.Sprintf("ch1-%02d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := store.Pause(ctx, "audiobook"); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 860),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	base := "http://" + sc.AdminAddr().String() + "/ui/"
	shot := func(name string) {
		if shots == "" {
			return
		}
		png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// wait polls a JavaScript predicate in the page.
	wait := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			text, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById("main").innerText`))
			t.Fatalf("%s: %v; the page shows:\n%s", what, err, text)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}

	// The batch, before any worker: 0%.
	if err := chromedp.Do(bctx, chromedp.Navigate(base+"#/batch/voices")); err != nil {
		t.Fatal(err)
	}
	wait("batch page", `document.querySelector('[data-testid=batch-progress]')?.textContent === '0%'`)
	wait("live updates", `document.getElementById('live').textContent === 'live'`)
	// A mark that a reload would erase.
	eval(`window.__noReload = "kept"; ""`)

	// A worker answers the batch; the bar follows without a reload.
	wctx, stopWorker := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); worker(wctx, t, sc) }()
	defer func() { stopWorker(); wg.Wait() }()
	wait("progress reaches 100%", `document.querySelector('[data-testid=batch-progress]')?.textContent === '100%'`)
	wait("counts", `document.querySelector('[data-testid=count-DONE]').textContent === '7' && document.querySelector('[data-testid=count-DEAD]').textContent === '1'`)
	if got := eval(`document.querySelector('[data-testid=pin]').textContent`); !strings.Contains(got, `"sample_rate": 24000`) {
		t.Fatalf("pinned config shown as %q", got)
	}
	shot("batch")

	// The DEAD task: its error in full, as text.
	eval(`document.querySelector('a[href="#/batch/voices?state=DEAD"]').click(); ""`)
	wait("DEAD filter", `[...document.querySelectorAll('main a')].some(a => a.textContent === 'u-evil')`)
	eval(`[...document.querySelectorAll('main a')].find(a => a.textContent === 'u-evil').click(); ""`)
	wait("task page", `document.querySelector('[data-testid=task-error]') !== null`)
	if got := eval(`document.querySelector('[data-testid=task-error]').textContent`); got != evilError {
		t.Fatalf("error shown as %q, want %q", got, evilError)
	}
	if got := eval(`document.querySelector('[data-testid=payload]').textContent`); !strings.Contains(got, `"syn_text": "<img src=x onerror=\"document.title='pwned'\">"`) {
		t.Fatalf("payload shown as %q", got)
	}
	if got := eval(`document.title + " " + document.querySelectorAll('main img, main script').length`); got != "Baton 0" {
		t.Fatalf("task data was parsed as markup: title and elements %q", got)
	}
	if got := eval(`document.querySelector('[data-testid=task-state]').textContent`); got != "DEAD" {
		t.Fatalf("state %q", got)
	}
	shot("task")

	// Retry from the page: the worker completes it this time.
	eval(`document.querySelector('[data-testid=retry]').click(); ""`)
	wait("retried task is DONE", `document.querySelector('[data-testid=task-state]')?.textContent === 'DONE'`)
	recs, _, _, err := audit.List(ctx, cli.KV, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Action != audit.TaskRetry || recs[0].Object != "u-evil" || !strings.HasPrefix(recs[0].Via, "web page from 127.0.0.1:") {
		t.Fatalf("audit records after the retry: %+v", recs)
	}

	// A config change appears without a reload.
	eval(`location.hash = "#/config/global"; ""`)
	wait("config page", `document.querySelector('[data-testid=config-current]')?.textContent.includes('"seed": 1')`)
	if _, err := docs.Set(ctx, "global", []byte(`{"sample_rate":24000,"seed":2,"output_dir":"/out"}`)); err != nil {
		t.Fatal(err)
	}
	wait("config change shown", `document.querySelector('[data-testid=config-current]')?.textContent.includes('"seed": 2')`)
	if got := eval(`window.__noReload || "reloaded"`); got != "kept" {
		t.Fatalf("the page reloaded: %q", got)
	}
	shot("config")

	if shots != "" {
		for _, v := range []string{"batches", "queues", "workers", "audit"} {
			eval(`location.hash = "#/` + v + `"; ""`)
			wait(v, `document.querySelector('nav a.active')?.dataset.view === '`+v+`' && document.querySelector('main h1') !== null`)
			shot(v)
		}
	}
	if err := ctx.Err(); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
