package configdoc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/internal/names"
	"github.com/jonboulle/clockwork"
	"github.com/santhosh-tekuri/jsonschema/v6"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix holds the current version of each document (config/<name>),
// for watchers.
const Prefix = "config/"

// Key prefixes, relative to the deployment's namespace.
const (
	prefixConfig  = Prefix
	prefixHistory = "confighist/"
	prefixSchema  = "configschema/"
)

// Defaults and limits.
const (
	// DefaultKeep is how many earlier versions of a document are kept.
	DefaultKeep = 50
	// MaxDocumentBytes is the largest document or schema.
	MaxDocumentBytes = 256 << 10
	// MaxNameLen is the longest document name.
	MaxNameLen = 64
)

// Errors of Store.
var (
	// ErrNotFound is returned for a document that was never set.
	ErrNotFound = errors.New("configdoc: no such document")
)

// InvalidError names what is wrong with a request: the field, and why.
type InvalidError struct {
	Field string
	Err   error
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Document is one version of a named document.
type Document struct {
	Name string `json:"name"`
	// Data is the document, a JSON object.
	Data json.RawMessage `json:"document"`
	// Revision is the etcd revision that wrote this version.
	Revision int64 `json:"revision"`
}

// ValidateName checks a document name: 1 to 64 of [A-Za-z0-9_.-].
func ValidateName(name string) error { return names.Check(name, MaxNameLen, "_.-") }

// ValidateObject checks that b is one JSON object of at most
// MaxDocumentBytes and returns it compacted.
func ValidateObject(b []byte) (json.RawMessage, error) {
	if len(b) > MaxDocumentBytes {
		return nil, fmt.Errorf("%d bytes is more than the limit of %d", len(b), MaxDocumentBytes)
	}
	// The document is in memory: json.Unmarshal scans it once, whole, and
	// refuses anything after the first value. (A json.Decoder over it
	// read it through a buffer grown with its length, and each growth was
	// new coverage to the fuzzer: FuzzValidateObject kept finding long
	// inputs "interesting" and spent a minute minimising each, at 0
	// execs/s; see docs/security.md.)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("must be a JSON object")
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	return out.Bytes(), nil
}

// Config tunes a Store.
type Config struct {
	// Keep is how many earlier versions of each document are kept under
	// confighist/. Default DefaultKeep.
	Keep int
	// Audit, when set, records each Set that changes a document (action
	// config.set) in the transaction that writes it. Default: none (the
	// baton CLI always sets it).
	Audit *audit.Writer
	// Clock times Watch's retries (see Watch). Default: the wall clock.
	Clock clockwork.Clock
}

// Store reads and writes documents. Its methods are safe for concurrent
// use.
type Store struct {
	kv      clientv3.KV
	watcher clientv3.Watcher
	keep    int
	audit   *audit.Writer
	clock   clockwork.Clock
}

// NewStore returns a store on kv (and watcher, for Watch; it may be nil
// when Watch is not used). Both are expected to be namespaced.
func NewStore(kv clientv3.KV, watcher clientv3.Watcher, cfg Config) *Store {
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Store{kv: kv, watcher: watcher, keep: cfg.Keep, audit: cfg.Audit, clock: cfg.Clock}
}

func configKey(name string) string     { return prefixConfig + name }
func schemaKey(name string) string     { return prefixSchema + name }
func historyPrefix(name string) string { return prefixHistory + name + "/" }
func historyKey(name string, rev int64) string {
	return fmt.Sprintf("%s%019d", historyPrefix(name), rev)
}

// Get returns the current version of the named document, or ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (Document, error) {
	if err := ValidateName(name); err != nil {
		return Document{}, &InvalidError{Field: "name", Err: err}
	}
	resp, err := s.kv.Get(ctx, configKey(name))
	if err != nil {
		return Document{}, err
	}
	if len(resp.Kvs) == 0 {
		return Document{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	kv := resp.Kvs[0]
	return Document{Name: name, Data: kv.Value, Revision: kv.ModRevision}, nil
}

// Schema returns the JSON Schema registered for the document, or nil.
func (s *Store) Schema(ctx context.Context, name string) (json.RawMessage, error) {
	resp, err := s.kv.Get(ctx, schemaKey(name))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// CompileSchema compiles a JSON Schema document. References to other
// documents (files, URLs) are refused: a schema must be self-contained.
func CompileSchema(b []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // no file or network loads
	const loc = "baton:schema.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("not a valid JSON Schema: %w", err)
	}
	return sch, nil
}

// validateAgainst checks doc against a compiled schema.
func validateAgainst(sch *jsonschema.Schema, doc []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			// The first line names the schema; the rest are the violations.
			lines := strings.Split(ve.Error(), "\n")
			var why []string
			for _, l := range lines[1:] {
				if l = strings.TrimPrefix(strings.TrimSpace(l), "- "); l != "" {
					why = append(why, l)
				}
			}
			if len(why) == 0 {
				why = lines[:1]
			}
			return fmt.Errorf("does not match the schema: %s", strings.Join(why, "; "))
		}
		return err
	}
	return nil
}

// SetOption is a rarely used option of Set.
type SetOption func(*setOptions)

type setOptions struct {
	schema json.RawMessage
}

// WithSchema registers schema for the document in the same transaction,
// replacing any earlier one. The document must meet it.
func WithSchema(schema []byte) SetOption {
	return func(o *setOptions) { o.schema = schema }
}

// Set makes doc the current version of the named document and keeps the
// version it replaces in the history. The document must be a JSON object
// and meet the registered schema (or the one given WithSchema). Setting a
// document equal to the current one changes nothing and returns the
// current version. Concurrent Sets are serialised by compare-and-swap;
// none is lost.
func (s *Store) Set(ctx context.Context, name string, doc []byte, opts ...SetOption) (Document, error) {
	var o setOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := ValidateName(name); err != nil {
		return Document{}, &InvalidError{Field: "name", Err: err}
	}
	data, err := ValidateObject(doc)
	if err != nil {
		return Document{}, &InvalidError{Field: "document", Err: err}
	}
	var newSchema *jsonschema.Schema
	var schemaData json.RawMessage
	if o.schema != nil {
		if schemaData, err = ValidateObject(o.schema); err != nil {
			return Document{}, &InvalidError{Field: "schema", Err: err}
		}
		if newSchema, err = CompileSchema(schemaData); err != nil {
			return Document{}, &InvalidError{Field: "schema", Err: err}
		}
		if err := validateAgainst(newSchema, data); err != nil {
			return Document{}, &InvalidError{Field: "document", Err: err}
		}
	}
	for {
		resp, err := s.kv.Txn(ctx).Then(
			clientv3.OpGet(configKey(name)),
			clientv3.OpGet(schemaKey(name)),
			clientv3.OpGet(historyPrefix(name), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)),
		).Commit()
		if err != nil {
			return Document{}, err
		}
		cur := resp.Responses[0].GetResponseRange().Kvs
		sch := resp.Responses[1].GetResponseRange().Kvs
		hist := resp.Responses[2].GetResponseRange().Kvs

		var curRev, schemaRev int64
		if len(sch) == 1 {
			schemaRev = sch[0].ModRevision
		}
		if newSchema == nil && len(sch) == 1 {
			compiled, err := CompileSchema(sch[0].Value)
			if err != nil {
				return Document{}, fmt.Errorf("stored schema of %q: %w", name, err)
			}
			if err := validateAgainst(compiled, data); err != nil {
				return Document{}, &InvalidError{Field: "document", Err: err}
			}
		}
		ops := []clientv3.Op{clientv3.OpPut(configKey(name), string(data))}
		schemaChanged := newSchema != nil && (len(sch) == 0 || !bytes.Equal(sch[0].Value, schemaData))
		if schemaChanged {
			ops = append(ops, clientv3.OpPut(schemaKey(name), string(schemaData)))
		}
		if len(cur) == 1 {
			curRev = cur[0].ModRevision
			if bytes.Equal(cur[0].Value, data) && len(ops) == 1 {
				return Document{Name: name, Data: cur[0].Value, Revision: curRev}, nil
			}
			ops = append(ops, clientv3.OpPut(historyKey(name, curRev), string(cur[0].Value)))
			// Keep the newest s.keep versions, counting the one added now.
			if drop := len(hist) + 1 - s.keep; drop > 0 {
				ops = append(ops, clientv3.OpDelete(string(hist[0].Key), clientv3.WithRange(string(hist[drop-1].Key)+"\x00")))
			}
		}
		if s.audit != nil {
			detail := "new"
			if curRev != 0 {
				detail = fmt.Sprintf("replaced revision %d", curRev)
			}
			if schemaChanged {
				detail += "; schema registered"
			}
			rec, err := s.audit.Ops(ctx, audit.ConfigSet, name, detail)
			if err != nil {
				return Document{}, fmt.Errorf("audit record: %w", err)
			}
			ops = append(ops, rec...)
		}
		tr, err := s.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(configKey(name)), "=", curRev),
			clientv3.Compare(clientv3.ModRevision(schemaKey(name)), "=", schemaRev),
		).Then(ops...).Commit()
		if err != nil {
			return Document{}, err
		}
		if tr.Succeeded {
			return Document{Name: name, Data: data, Revision: tr.Header.Revision}, nil
		}
		// Another writer came first: validate against what it wrote.
	}
}

// History returns the kept versions of the document, newest first,
// starting with the current one.
func (s *Store) History(ctx context.Context, name string) ([]Document, error) {
	if err := ValidateName(name); err != nil {
		return nil, &InvalidError{Field: "name", Err: err}
	}
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(configKey(name)),
		clientv3.OpGet(historyPrefix(name), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)),
	).Commit()
	if err != nil {
		return nil, err
	}
	cur := resp.Responses[0].GetResponseRange().Kvs
	if len(cur) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	out := []Document{{Name: name, Data: cur[0].Value, Revision: cur[0].ModRevision}}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		k := string(kv.Key)
		rev, err := strconv.ParseInt(k[strings.LastIndexByte(k, '/')+1:], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Document{Name: name, Data: kv.Value, Revision: rev})
	}
	return out, nil
}

// Names lists the documents that exist, sorted.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	resp, err := s.kv.Get(ctx, prefixConfig, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), prefixConfig))
	}
	return out, nil
}
