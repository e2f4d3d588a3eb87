package configdoc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
)

var endpoint string

func TestMain(m *testing.M) {
	os.Exit(sidecartest.RunWithEtcd(m, &endpoint))
}

func newStore(t *testing.T, keep int) *configdoc.Store {
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	return configdoc.NewStore(cli.KV, cli.Watcher, configdoc.Config{Keep: keep})
}

// Concurrent writers are serialised by compare-and-swap: every version is
// either current or in the history, none is lost.
func TestConcurrentSetsLoseNothing(t *testing.T) {
	s := newStore(t, 100)
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Set(ctx, "global", fmt.Appendf(nil, `{"writer":%d}`, i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	hist, err := s.History(ctx, "global")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[float64]bool{}
	for i, d := range hist {
		var doc map[string]float64
		if err := json.Unmarshal(d.Data, &doc); err != nil {
			t.Fatal(err)
		}
		seen[doc["writer"]] = true
		if i > 0 && d.Revision >= hist[i-1].Revision {
			t.Fatalf("history not newest first: %d after %d", d.Revision, hist[i-1].Revision)
		}
	}
	if len(hist) != writers || len(seen) != writers {
		t.Fatalf("history has %d versions of %d writers; want %d", len(hist), len(seen), writers)
	}
}

// History keeps the newest Keep earlier versions.
func TestHistoryIsTrimmed(t *testing.T) {
	s := newStore(t, 3)
	ctx := context.Background()
	var last configdoc.Document
	for i := range 10 {
		d, err := s.Set(ctx, "global", fmt.Appendf(nil, `{"seq":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		last = d
	}
	hist, err := s.History(ctx, "global")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 4 || hist[0].Revision != last.Revision || string(hist[3].Data) != `{"seq":6}` {
		t.Fatalf("history = %+v; want the current version and the 3 before it", hist)
	}
}

func TestSetRefusesBadDocuments(t *testing.T) {
	s := newStore(t, 0)
	ctx := context.Background()
	for _, tc := range []struct {
		doc, field string
	}{
		{`[1,2]`, "document"},
		{`{"a":1} {"b":2}`, "document"},
		{`{"a":`, "document"},
		{`"text"`, "document"},
	} {
		_, err := s.Set(ctx, "global", []byte(tc.doc))
		var inv *configdoc.InvalidError
		if err == nil || !errorsAs(err, &inv) || inv.Field != tc.field {
			t.Errorf("Set(%s) = %v; want an InvalidError on %s", tc.doc, err, tc.field)
		}
	}
	if _, err := s.Set(ctx, "bad/name", []byte(`{}`)); err == nil {
		t.Error("a name with a slash was accepted")
	}
	schema := []byte(`{"type":"object","required":["seed"]}`)
	if _, err := s.Set(ctx, "global", []byte(`{"x":1}`), configdoc.WithSchema(schema)); err == nil {
		t.Error("a document not meeting the schema given with it was accepted")
	}
	if _, err := s.Set(ctx, "global", []byte(`{"seed":1}`), configdoc.WithSchema(schema)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(ctx, "global", []byte(`{"x":1}`)); err == nil {
		t.Error("a document not meeting the stored schema was accepted")
	}
	if _, err := s.Set(ctx, "other", []byte(`{}`), configdoc.WithSchema([]byte(`{"$ref":"file:///etc/passwd"}`))); err == nil {
		t.Error("a schema referring to a file was accepted")
	}
	if d, err := s.Get(ctx, "global"); err != nil || string(d.Data) != `{"seed":1}` {
		t.Fatalf("Get = %s %v; refused writes must change nothing", d.Data, err)
	}
}

func FuzzValidateObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}]}`, `[]`, `{"a":1}{}`, "{\"a\":\"\xff\"}", ` {"a" : 1 } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := configdoc.ValidateObject(b)
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("accepted %q but the result %q is not a JSON object: %v", b, out, err)
		}
		again, err := configdoc.ValidateObject(out)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q -> %q %v", b, out, again, err)
		}
	})
}

func errorsAs(err error, target **configdoc.InvalidError) bool { return errors.As(err, target) }
