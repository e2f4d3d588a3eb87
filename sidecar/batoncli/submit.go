package batoncli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/internal/etcdutil"
	"github.com/batonhq/baton/sidecar/jsonl"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation name of the command line's spans.
const tracerName = "github.com/batonhq/baton/sidecar/batoncli"

func submitCommand() *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "enqueue the tasks of a JSONL file (one JSON object per line)",
		ArgsUsage: "FILE.jsonl|-",
		Description: "Each line is one task's payload, for example a GLM-TTS batch line\n" +
			"{\"uttid\": \"...\", \"prompt_text\": \"...\", \"prompt_speech\": \"...\", \"syn_text\": \"...\"}.\n" +
			"The task id is the --id-field of the line (default: \"id\", else \"uttid\", else a hash of the line),\n" +
			"so submitting the same file twice creates nothing new. Every line is checked first; any bad\n" +
			"line is reported as FILE:LINE: reason and nothing is written.\n\n" +
			"Routing: --affinity-field prompt_speech gives each task the speaker prompt of its line as its\n" +
			"affinity key, so that tasks of one speaker prefer the worker whose GPU has that speaker's\n" +
			"conditioning cached. A line without the field (or with null) has no affinity; a value that is\n" +
			"not a string is a bad line. --require model=indextts2 (repeatable) sends every task of the file\n" +
			"only to sidecars started with --label model=indextts2.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "queue", Aliases: []string{"q"}, Value: "default", EnvVars: []string{"BATON_QUEUE"}, Usage: "queue to submit to"},
			&cli.StringFlag{Name: "batch", Usage: "batch id to group the tasks under"},
			&cli.StringFlag{Name: "pin-config", Usage: "hand every task of the batch this config document as it is now (needs --batch)"},
			&cli.StringFlag{Name: "id-field", Usage: "payload field holding the task id (default: id, else uttid, else a hash)"},
			&cli.StringFlag{Name: "affinity-field", Usage: "payload field holding each task's affinity key, a string (e.g. prompt_speech); a line without it has none"},
			&cli.StringSliceFlag{Name: "require", Usage: "KEY=VALUE label a sidecar must have (its --label) to receive the tasks (repeatable), e.g. model=indextts2"},
			&cli.IntFlag{Name: "priority", Usage: "priority, -1000 to 1000; higher runs first"},
			&cli.IntFlag{Name: "max-attempts", Usage: "attempts before a task is DEAD (default 3)"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long a claim may go without a heartbeat (default 5m)"},
			&cli.TimestampFlag{Name: "not-before", Layout: time.RFC3339, Usage: "hold the tasks back until this time (RFC 3339)"},
			&cli.IntFlag{Name: "max-txn-ops", Value: 128, Usage: "operations per etcd transaction; at most the server's --max-txn-ops"},
			&cli.IntFlag{Name: "payload-limit", Value: 64 << 10, EnvVars: []string{"BATON_PAYLOAD_LIMIT"}, Usage: "largest payload in bytes"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("submit: give one FILE.jsonl, or - for standard input", 2)
			}
			if c.String("pin-config") != "" && c.String("batch") == "" {
				return cli.Exit("submit: --pin-config needs --batch: the config is pinned to a batch", 2)
			}
			require, err := parseRequire(c.StringSlice("require"))
			if err != nil {
				return cli.Exit("submit: "+err.Error(), 2)
			}
			name := c.Args().First()
			var in io.Reader = os.Stdin
			if name != "-" {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			} else {
				name = "<stdin>"
			}
			recs, err := jsonl.Read(in, name)
			var bad jsonl.Errors
			if err != nil && !errors.As(err, &bad) {
				return err
			}
			store, err := workqueue.NewStore(nil, workqueue.Config{MaxTxnOps: c.Int("max-txn-ops"), PayloadLimit: c.Int("payload-limit")})
			if err != nil {
				return err
			}
			specs, badSpecs := buildSpecs(c, store, recs, name, require)
			if bad = append(bad, badSpecs...); len(bad) > 0 {
				sort.Slice(bad, func(i, j int) bool { return bad[i].Line < bad[j].Line })
				return cli.Exit(fmt.Sprintf("%s\n%d bad lines; nothing was written", bad.Error(), len(bad)), 1)
			}
			if len(specs) == 0 {
				fmt.Fprintf(c.App.ErrWriter, "%s: no tasks\n", name)
				return nil
			}
			if f := c.String("affinity-field"); f != "" && countAffinity(specs) == 0 {
				fmt.Fprintf(c.App.ErrWriter, "%s: no line has a value in --affinity-field %q; the tasks have no affinity\n", name, f)
			}
			return doSubmit(c, specs, name)
		},
	}
}

// buildSpecs turns lines into specs and checks each, so that every bad
// line is reported before anything is written. Every spec requires the
// labels require.
func buildSpecs(c *cli.Context, store *workqueue.Store, recs []jsonl.Record, file string, require map[string]string) ([]workqueue.Spec, jsonl.Errors) {
	var bad jsonl.Errors
	seen := map[string]int{}
	specs := make([]workqueue.Spec, 0, len(recs))
	for _, r := range recs {
		sp := workqueue.Spec{
			ID:          workqueue.DeriveID(r.Payload, c.String("id-field")),
			Queue:       c.String("queue"),
			Payload:     r.Payload,
			Priority:    int32(c.Int("priority")),
			MaxAttempts: int32(c.Int("max-attempts")),
			Timeout:     c.Duration("timeout"),
			Batch:       c.String("batch"),
			Require:     require,
		}
		if t := c.Timestamp("not-before"); t != nil {
			sp.NotBefore = *t
		}
		if f := c.String("affinity-field"); f != "" {
			aff, err := affinityOf(r.Payload, f)
			if err != nil {
				bad = append(bad, &jsonl.LineError{File: file, Line: r.Line, Err: err})
				continue
			}
			sp.Affinity = aff
		}
		if err := store.Normalize(&sp, ""); err != nil {
			bad = append(bad, &jsonl.LineError{File: file, Line: r.Line, Err: err})
			continue
		}
		if first, dup := seen[sp.ID]; dup {
			bad = append(bad, &jsonl.LineError{File: file, Line: r.Line, Err: fmt.Errorf("id %q is also the id of line %d", sp.ID, first)})
			continue
		}
		seen[sp.ID] = r.Line
		specs = append(specs, sp)
	}
	return specs, bad
}

func doSubmit(c *cli.Context, specs []workqueue.Spec, name string) error {
	ecfg := etcdConfig(c)
	etcd, err := etcdutil.New(ecfg)
	if err != nil {
		return err
	}
	defer etcd.Close()
	if err := etcdutil.Ping(c.Context, etcd, ecfg.Endpoints, 10*time.Second); err != nil {
		return err
	}
	store, err := workqueue.NewStore(etcd.KV, workqueue.Config{MaxTxnOps: c.Int("max-txn-ops"), PayloadLimit: c.Int("payload-limit")})
	if err != nil {
		return err
	}
	opts := []workqueue.SubmitOption{}
	if name := c.String("pin-config"); name != "" {
		d, err := configdoc.NewStore(etcd.KV, nil, configdoc.Config{}).Get(c.Context, name)
		if errors.Is(err, configdoc.ErrNotFound) {
			return cli.Exit(fmt.Sprintf("pin-config: config %q is not set; nothing was written", name), 1)
		}
		if err != nil {
			return fmt.Errorf("pin-config: %w", err)
		}
		opts = append(opts, workqueue.WithPin(workqueue.Pin{Name: d.Name, Revision: d.Revision, Document: d.Data}))
	}
	log, err := logger(c)
	if err != nil {
		return err
	}
	tp, flush, err := tracerProvider(c, log, telemetry.TraceConfig{ServiceName: "baton-cli"})
	if err != nil {
		return err
	}
	defer flush()
	bar := newProgress(c.App.ErrWriter, "submit", len(specs))
	ctx, cancel := context.WithTimeout(c.Context, 10*time.Minute)
	defer cancel()
	start := time.Now()
	// One span for the file; its context is stored with every task, so each
	// task's claim, worker and answer spans join this trace.
	ctx, span := tp.Tracer(tracerName).Start(ctx, "baton.submit", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		workqueue.AttrTaskQueue.String(c.String("queue")),
		workqueue.AttrBatch.String(c.String("batch")),
		attribute.String("baton.submit.file", name),
		attribute.Int("baton.submit.tasks", len(specs)),
	))
	if tp := workqueue.FormatTraceparent(span.SpanContext()); tp != "" {
		for i := range specs {
			specs[i].Traceparent = tp
		}
	}
	opts = append(opts, workqueue.WithProgress(func(done, total int) { bar.set(done) }))
	res, err := store.Submit(ctx, specs, opts...)
	bar.finish()
	created, existing := res.Counts()
	span.SetAttributes(attribute.Int("baton.submit.created", created), attribute.Int("baton.submit.existing", existing))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil {
		var inv *workqueue.InvalidError
		if errors.As(err, &inv) {
			return cli.Exit(err.Error(), 1)
		}
		return fmt.Errorf("submit %s: %w (tasks written before the failure stay; submitting again writes the rest)", name, err)
	}
	fmt.Fprintf(c.App.Writer, "submitted %s: %d tasks, %d created, %d existing, queue %s%s%s%s%s in %v\n",
		name, len(specs), created, existing, c.String("queue"), batchNote(c.String("batch")), pinNote(res.Pin),
		affinityNote(c.String("affinity-field"), specs), requireNote(specs[0].Require), time.Since(start).Round(time.Millisecond))
	return nil
}

func batchNote(b string) string {
	if b == "" {
		return ""
	}
	return ", batch " + b
}

func pinNote(p *workqueue.Pin) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf(", config %s revision %d pinned", p.Name, p.Revision)
}
