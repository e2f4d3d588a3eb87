package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/ui"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var endpoint string

func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }

// page is a UI served by httptest on a namespace of its own, with Run
// going until the test ends.
type page struct {
	*ui.UI
	url   string
	srv   *httptest.Server
	cli   *clientv3.Client
	store *workqueue.Store
	docs  *configdoc.Store
}

func newPage(t *testing.T, mod func(*ui.Config)) *page {
	t.Helper()
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	docs := configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{})
	cfg := ui.Config{KV: cli.KV, Watcher: cli.Watcher, Queue: store, Configs: docs, Actions: true,
		Actor: audit.LocalActor(""), FlushInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	u, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return &page{UI: u, url: srv.URL, srv: srv, cli: cli, store: store, docs: docs}
}

func (p *page) submit(t *testing.T, batch string, n int, payload func(i int) string) {
	t.Helper()
	specs := make([]workqueue.Spec, n)
	for i := range specs {
		pl := `{"n":` + fmt.Sprint(i) + `}`
		if payload != nil {
			pl = payload(i)
		}
		specs[i] = workqueue.Spec{ID: fmt.Sprintf("%s-%03d", batch, i), Queue: "tts", Batch: batch, Payload: json.RawMessage(pl)}
	}
	if _, err := p.store.Submit(context.Background(), specs); err != nil {
		t.Fatal(err)
	}
}

// get fetches path and decodes the JSON answer into v; it returns the
// response (body consumed).
func (p *page) get(t *testing.T, path string, v any, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", p.url+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp
}

// post sends an action; hdr are header pairs (none: the page's CSRF token
// and JSON).
func (p *page) post(t *testing.T, path string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", p.url+path, strings.NewReader("{}"))
	if hdr == nil {
		hdr = []string{"Content-Type", "application/json", "X-Baton-CSRF", p.csrf(t)}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *page) csrf(t *testing.T) string {
	var s struct{ CSRF string }
	p.get(t, "/ui/api/session", &s)
	return s.CSRF
}

// eventually polls f until it returns nil or 10s pass.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

func TestBatchPages(t *testing.T) {
	p := newPage(t, nil)
	p.submit(t, "big", 120, nil)
	p.submit(t, "a1", 1, nil)
	p.submit(t, "a2", 1, nil)
	ctx := context.Background()
	if _, err := p.store.Cancel(ctx, "big-007"); err != nil {
		t.Fatal(err)
	}

	// The batch's tasks, 50 at a time, in id order.
	var seen []string
	after := ""
	for range 4 {
		var d struct {
			Page workqueue.TaskPage `json:"page"`
		}
		if r := p.get(t, "/ui/api/batch?name=big&limit=50&after="+after, &d); r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
		for _, tk := range d.Page.Tasks {
			seen = append(seen, tk.ID)
		}
		if after = d.Page.Next; after == "" {
			break
		}
	}
	if len(seen) != 120 || seen[0] != "big-000" || seen[119] != "big-119" {
		t.Fatalf("paged %d tasks (%v ... ), want big-000..big-119", len(seen), seen[:min(3, len(seen))])
	}

	// Filtered by state: only the cancelled one, found within the scan bound.
	var f struct {
		Page workqueue.TaskPage `json:"page"`
	}
	p.get(t, "/ui/api/batch?name=big&state=cancelled&limit=10", &f)
	if len(f.Page.Tasks) != 1 || f.Page.Tasks[0].ID != "big-007" || f.Page.Tasks[0].Status.State != workqueue.StateCancelled {
		t.Fatalf("cancelled filter: %+v", f.Page)
	}
	// A filtered page reads at most 20 pages' worth of members.
	var g struct {
		Page workqueue.TaskPage `json:"page"`
	}
	p.get(t, "/ui/api/batch?name=big&state=dead&limit=2", &g)
	if len(g.Page.Tasks) != 0 || g.Page.Scanned != 40 || !strings.HasSuffix(g.Page.Next, "/big-039") {
		t.Fatalf("dead filter with limit 2: scanned %d next %q tasks %d, want 40 read and a next page", g.Page.Scanned, g.Page.Next, len(g.Page.Tasks))
	}

	// The batches, from the counters: 2 a page.
	eventually(t, func() error {
		var d struct {
			Ready   bool              `json:"ready"`
			Batches []ui.BatchSummary `json:"batches"`
			Next    string            `json:"next"`
		}
		p.get(t, "/ui/api/batches?limit=2", &d)
		if !d.Ready || len(d.Batches) != 2 || d.Batches[0].Name != "a1" || d.Next != "a2" {
			return fmt.Errorf("first page: %+v", d)
		}
		p.get(t, "/ui/api/batches?limit=2&after=a2", &d)
		if len(d.Batches) != 1 || d.Batches[0].Name != "big" || d.Next != "" {
			return fmt.Errorf("second page: %+v", d)
		}
		c := d.Batches[0].Counts
		if c.Total != 120 || c.Pending != 119 || c.Cancelled != 1 {
			return fmt.Errorf("big's counts: %+v", c)
		}
		return nil
	})
	if r := p.get(t, "/ui/api/batches?limit=0", nil); r.StatusCode != 400 {
		t.Fatalf("limit=0: status %d, want 400", r.StatusCode)
	}
	if r := p.get(t, "/ui/api/batch?name=big&state=nope", nil); r.StatusCode != 400 {
		t.Fatalf("state=nope: status %d, want 400", r.StatusCode)
	}
}

func TestEscaping(t *testing.T) {
	p := newPage(t, nil)
	evil := `{"text":"<script>alert(1)</script><img src=x onerror=alert(2)>"}`
	p.submit(t, "b", 1, func(int) string { return evil })
	req, _ := http.NewRequest("GET", p.url+"/ui/api/task?id=b-000", nil)
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "<script") || strings.Contains(string(body), "<img") || !strings.Contains(string(body), `\u003cscript\u003e`) {
		t.Fatalf("task JSON carries markup unescaped: %s", body)
	}
	h := resp.Header
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("headers: %v", h)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP: %q", csp)
	}
	// The page's code builds every element with text nodes.
	js, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	// Nothing is loaded from elsewhere.
	html, _ := os.ReadFile("static/index.html")
	for _, f := range [][]byte{js, html} {
		if strings.Contains(string(f), "http://") || strings.Contains(string(f), "https://") {
			t.Errorf("a static file references another site")
		}
	}
	// The files are served from the binary.
	if r := p.get(t, "/ui/app.js", nil); r.StatusCode != 200 || !strings.Contains(r.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("app.js: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
}

func TestActions(t *testing.T) {
	p := newPage(t, nil)
	p.submit(t, "b", 2, nil)
	ctx := context.Background()
	if _, err := p.store.Cancel(ctx, "b-000"); err != nil {
		t.Fatal(err)
	}
	csrf := p.csrf(t)
	for _, c := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"no CSRF token", []string{"Content-Type", "application/json"}, 403},
		{"wrong CSRF token", []string{"Content-Type", "application/json", "X-Baton-CSRF", "x" + csrf[1:]}, 403},
		{"cross-site", []string{"Content-Type", "application/json", "X-Baton-CSRF", csrf, "Sec-Fetch-Site", "cross-site"}, 403},
		{"other origin", []string{"Content-Type", "application/json", "X-Baton-CSRF", csrf, "Origin", "http://evil.example"}, 403},
		{"form body", []string{"Content-Type", "application/x-www-form-urlencoded", "X-Baton-CSRF", csrf}, 415},
	} {
		if code, body := p.post(t, "/ui/api/tasks/b-000/retry", c.hdr...); code != c.code {
			t.Errorf("%s: status %d (%s), want %d", c.name, code, body, c.code)
		}
	}
	if st, _ := p.store.Get(ctx, "b-000"); st.Status.State != workqueue.StateCancelled {
		t.Fatalf("a refused retry changed the task: %s", st.Status.State)
	}

	// The CLI's rules: a PENDING task is left alone; a CANCELLED one is
	// retried.
	if code, body := p.post(t, "/ui/api/tasks/b-001/retry"); code != 200 || !strings.Contains(body, "PENDING already") {
		t.Fatalf("retry of a PENDING task: %d %s", code, body)
	}
	if code, body := p.post(t, "/ui/api/tasks/nope/retry"); code != 404 {
		t.Fatalf("retry of an unknown task: %d %s", code, body)
	}
	if code, body := p.post(t, "/ui/api/tasks/b-001/explode"); code != 404 {
		t.Fatalf("an unknown action: %d %s", code, body)
	}
	if code, body := p.post(t, "/ui/api/tasks/b-000/retry", "Content-Type", "application/json", "X-Baton-CSRF", csrf, "Sec-Fetch-Site", "same-origin"); code != 200 {
		t.Fatalf("retry: %d %s", code, body)
	}
	got, err := p.store.Get(ctx, "b-000")
	if err != nil || got.Status.State != workqueue.StatePending {
		t.Fatalf("after retry: %+v %v", got, err)
	}
	if code, body := p.post(t, "/ui/api/queues/tts/pause"); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	if paused, _ := p.store.Paused(ctx); len(paused) != 1 {
		t.Fatalf("paused queues: %v", paused)
	}
	if code, body := p.post(t, "/ui/api/queues/tts/resume"); code != 200 {
		t.Fatalf("resume: %d %s", code, body)
	}
	if code, body := p.post(t, "/ui/api/tasks/b-001/cancel"); code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}

	// Each action wrote its audit record in its own transaction, naming
	// the web page as the way it came.
	recs, _, _, err := audit.List(ctx, p.cli.KV, 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range recs {
		actions = append(actions, string(r.Action)+" "+r.Object)
		if !strings.HasPrefix(r.Via, "web page from 127.0.0.1:") {
			t.Errorf("record %s: via %q", r.Action, r.Via)
		}
	}
	if want := "task.retry b-000,queue.pause tts,queue.resume tts,task.cancel b-001"; strings.Join(actions, ",") != want {
		t.Fatalf("audit records %v, want %s", actions, want)
	}
	resp, err := p.cli.Get(ctx, "state/b-001")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != recs[3].Revision {
		t.Fatalf("the cancel and its record are not one transaction: state at %d, record at %d (%v)", resp.Kvs[0].ModRevision, recs[3].Revision, err)
	}
}

func TestActionsOff(t *testing.T) {
	allowed, why, err := ui.ActionsFor(ui.ActionsAuto, "0.0.0.0:9464")
	if err != nil || allowed || !strings.Contains(why, "--ui-actions=on") {
		t.Fatalf("auto on 0.0.0.0: %v %q %v", allowed, why, err)
	}
	for _, c := range []struct {
		mode, addr string
		want       bool
	}{
		{ui.ActionsAuto, "127.0.0.1:9465", true}, {ui.ActionsAuto, "[::1]:9465", true}, {ui.ActionsAuto, "localhost:1", true},
		{ui.ActionsAuto, ":9464", false}, {ui.ActionsAuto, "10.1.2.3:9464", false},
		{ui.ActionsOn, "0.0.0.0:9464", true}, {ui.ActionsOff, "127.0.0.1:9465", false},
	} {
		if got, _, err := ui.ActionsFor(c.mode, c.addr); err != nil || got != c.want {
			t.Errorf("ActionsFor(%q, %q) = %v, %v; want %v", c.mode, c.addr, got, err, c.want)
		}
	}
	if _, _, err := ui.ActionsFor("yes", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "ui-actions") {
		t.Fatalf("bad mode: %v", err)
	}

	p := newPage(t, func(c *ui.Config) { c.Actions, c.ActionsOff = false, why })
	p.submit(t, "b", 1, nil)
	if _, err := p.store.Cancel(context.Background(), "b-000"); err != nil {
		t.Fatal(err)
	}
	code, body := p.post(t, "/ui/api/tasks/b-000/retry")
	if code != 403 || !strings.Contains(body, "--ui-actions=on") {
		t.Fatalf("retry with actions off: %d %s", code, body)
	}
	if st, _ := p.store.Get(context.Background(), "b-000"); st.Status.State != workqueue.StateCancelled {
		t.Fatalf("retried with actions off: %s", st.Status.State)
	}
}

func TestToken(t *testing.T) {
	p := newPage(t, func(c *ui.Config) { c.Token = "s3cret" })
	if r := p.get(t, "/ui/api/session", nil); r.StatusCode != 401 {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	if r := p.get(t, "/ui/api/session", nil, "Authorization", "Bearer nope"); r.StatusCode != 401 {
		t.Fatalf("wrong token: %d", r.StatusCode)
	}
	if r := p.get(t, "/ui/api/session", nil, "Authorization", "Bearer s3cret"); r.StatusCode != 200 {
		t.Fatalf("bearer token: %d", r.StatusCode)
	}
	if r := p.get(t, "/ui/", nil); r.StatusCode != 200 {
		t.Fatalf("the page's files are open (they hold no data): %d", r.StatusCode)
	}
	if code, _ := p.post(t, "/ui/api/tasks/x/retry", "Content-Type", "application/json"); code != 401 {
		t.Fatalf("action without the token: %d", code)
	}
	login := func(tok string) *http.Response {
		resp, err := p.srv.Client().Post(p.url+"/ui/api/login", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := login("nope"); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Fatalf("login with a wrong token: %d %v", r.StatusCode, r.Cookies())
	}
	r := login("s3cret")
	if r.StatusCode != 200 || len(r.Cookies()) != 1 {
		t.Fatalf("login: %d %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, "s3cret") {
		t.Fatalf("cookie: %+v", c)
	}
	if r := p.get(t, "/ui/api/session", nil, "Cookie", c.Name+"="+c.Value); r.StatusCode != 200 {
		t.Fatalf("with the session cookie: %d", r.StatusCode)
	}
}

// stream opens the live updates and returns a reader of their data lines.
func stream(t *testing.T, ctx context.Context, p *page) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url+"/ui/api/events", nil)
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, bufio.NewReader(resp.Body)
}

// nextData returns the next "data:" line of an event stream.
func nextData(t *testing.T, r *bufio.Reader) (string, error) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			return strings.TrimSpace(d), nil
		}
	}
}

func TestEventsCap(t *testing.T) {
	p := newPage(t, func(c *ui.Config) { c.MaxSubscribers = 2 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1, b1 := stream(t, ctx, p)
	defer r1.Body.Close()
	r2, _ := stream(t, ctx, p)
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("statuses %d %d", r1.StatusCode, r2.StatusCode)
	}
	if r := p.get(t, "/ui/api/events", nil); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("third subscriber: %d, want 503 with Retry-After", r.StatusCode)
	}
	r2.Body.Close()
	// The second's slot comes back once its handler has returned.
	eventually(t, func() error {
		r3, _ := stream(t, ctx, p)
		defer r3.Body.Close()
		if r3.StatusCode != 200 {
			return fmt.Errorf("after one left: %d", r3.StatusCode)
		}
		return nil
	})

	// A config change reaches the stream. The page's watches may start
	// after a first change (Run was just started), so change it again
	// until one arrives.
	if _, err := nextData(t, b1); err != nil { // hello
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for {
			d, err := nextData(t, b1)
			if err != nil {
				return // the stream ended with the test
			}
			lines <- d
		}
	}()
	deadline := time.After(20 * time.Second)
	for seed := 1; ; seed++ {
		if _, err := p.docs.Set(ctx, "global", []byte(fmt.Sprintf(`{"seed":%d}`, seed))); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-lines:
			if strings.Contains(d, `"config:global"`) {
				return
			}
		case <-time.After(time.Second):
		case <-deadline:
			t.Fatal("no config:global topic on the stream within 20s")
		}
	}
}

func TestEventsEndWithRun(t *testing.T) {
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	store, _ := workqueue.NewStore(cli.KV, workqueue.Config{})
	u, err := ui.New(ui.Config{KV: cli.KV, Watcher: cli.Watcher, Queue: store, Configs: configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx) }()
	// The request's deadline only bounds a failing test.
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", srv.URL+"/ui/api/events", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := nextData(t, br); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	// Stopping Run ends the stream: the handler returns (goleak in
	// TestMain would catch one that did not).
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the stream did not end when Run stopped: %v", err)
	}
	r, err := srv.Client().Get(srv.URL + "/ui/api/events")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Fatalf("subscribe after stop: %d, want 503", r.StatusCode)
	}
}

func TestTaskHistory(t *testing.T) {
	p := newPage(t, nil)
	p.submit(t, "h", 1, nil)
	ctx := context.Background()
	if _, err := p.store.Cancel(ctx, "h-000"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.Retry(ctx, "h-000"); err != nil {
		t.Fatal(err)
	}
	var d struct {
		Task    workqueue.TaskInfo       `json:"task"`
		History []workqueue.HistoryEntry `json:"history"`
	}
	if r := p.get(t, "/ui/api/task?id=h-000", &d); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	var states []string
	for _, h := range d.History {
		states = append(states, string(h.Status.State))
	}
	if strings.Join(states, ",") != "PENDING,CANCELLED,PENDING" {
		t.Fatalf("history %v, want PENDING,CANCELLED,PENDING (newest first)", states)
	}
	if r := p.get(t, "/ui/api/task?id=nope", nil); r.StatusCode != 404 {
		t.Fatalf("unknown task: %d", r.StatusCode)
	}
}
