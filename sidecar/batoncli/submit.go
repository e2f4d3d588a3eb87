package batoncli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/etcdconn"
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
			"line is reported as FILE:LINE: reason (the first --show-errors of them; all are counted) and\n" +
			"nothing is written.\n\n" +
			"The file is read twice, a line at a time (lines up to 4 MiB): memory does not grow with its\n" +
			"length (past 1M lines, repeated ids are found with 20 bytes per line of unlinked files in\n" +
			"$TMPDIR). FILE must be a regular file; a FIFO, a device or a directory is refused. To stream\n" +
			"from a pipe give - (cmd | baton submit -):\n" +
			"standard input is copied to an unlinked file in $TMPDIR while it is checked, unless it is a\n" +
			"regular file itself.\n\n" +
			"Routing: --affinity-field prompt_speech gives each task the speaker prompt of its line as its\n" +
			"affinity key, so that tasks of one speaker prefer the worker whose GPU has that speaker's\n" +
			"conditioning cached. A line without the field (or with null) has no affinity; a value that is\n" +
			"not a string is a bad line. --require model=indextts2 (repeatable) sends every task of the file\n" +
			"only to sidecars started with --label model=indextts2.\n\n" +
			"Big files are fed: at most --max-pending of the file's tasks are unfinished (pending, delayed or\n" +
			"claimed) at once; the rest are written, in line order, as tasks finish (followed with an etcd\n" +
			"watch), with the progress, the unfinished count and an ETA on stderr. The command then runs until\n" +
			"the last line is written. If it stops (Ctrl-C, kill -9, a lost connection), run it again with the\n" +
			"same file and flags: it walks the file from the start, leaves the tasks that exist alone (their\n" +
			"ids come from the lines) and goes on from where the file stands in etcd, with no duplicates.\n" +
			"Do so within --retention of the sidecars (24h by default): a finished task removed after it\n" +
			"would be written again.",
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
			&cli.IntFlag{Name: "show-errors", Value: 20, Usage: "bad lines to print; the rest are counted"},
			&cli.IntFlag{Name: "payload-limit", Value: 64 << 10, EnvVars: []string{"BATON_PAYLOAD_LIMIT"}, Usage: "largest payload in bytes"},
			&cli.IntFlag{Name: "max-pending", Usage: "write a task only while fewer than this many of the file's tasks are unfinished, and the rest as tasks finish (default: a fifth of --etcd-quota-bytes at 450 + 1.2 x the average payload bytes per task; 2 GiB and 250-byte lines: about 572,000)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("submit: give one FILE.jsonl, or - for standard input", 2)
			}
			if c.String("pin-config") != "" && c.String("batch") == "" {
				return cli.Exit("submit: --pin-config needs --batch: the config is pinned to a batch", 2)
			}
			if c.Int("max-pending") < 0 {
				return cli.Exit(fmt.Sprintf("submit: --max-pending %d: must be 1 or more (0: the default)", c.Int("max-pending")), 2)
			}
			if c.Int("show-errors") < 0 {
				return cli.Exit(fmt.Sprintf("submit: --show-errors %d: must be 0 or more", c.Int("show-errors")), 2)
			}
			require, err := parseRequire(c.StringSlice("require"))
			if err != nil {
				return cli.Exit("submit: "+err.Error(), 2)
			}
			in, err := openSubmitInput(c.Args().First(), c.App.Reader)
			if err != nil {
				return cli.Exit("submit: "+err.Error(), 2)
			}
			defer in.Close()
			store, err := workqueue.NewStore(nil, workqueue.Config{MaxTxnOps: c.Int("max-txn-ops"), PayloadLimit: c.Int("payload-limit")})
			if err != nil {
				return err
			}
			b := newSpecBuilder(c, store, in.name, require)
			fc, err := checkFile(in, b, c.Int("show-errors"))
			if err != nil {
				return err
			}
			if fc.bad > 0 {
				return cli.Exit(fc.report(), 1)
			}
			if fc.tasks == 0 {
				fmt.Fprintf(c.App.ErrWriter, "%s: no tasks\n", in.name)
				return nil
			}
			if f := c.String("affinity-field"); f != "" && fc.withAffinity == 0 {
				fmt.Fprintf(c.App.ErrWriter, "%s: no line has a value in --affinity-field %q; the tasks have no affinity\n", in.name, f)
			}
			return doSubmit(c, in, b, fc)
		},
	}
}

// newSpecBuilder returns the builder of the specs the flags describe for
// the lines of file. Every spec requires the labels require.
func newSpecBuilder(c *cli.Context, store *workqueue.Store, file string, require map[string]string) *specBuilder {
	b := &specBuilder{
		store: store,
		file:  file,
		tmpl: workqueue.Spec{
			Queue:       c.String("queue"),
			Priority:    int32(c.Int("priority")),
			MaxAttempts: int32(c.Int("max-attempts")),
			Timeout:     c.Duration("timeout"),
			Batch:       c.String("batch"),
			Require:     require,
		},
		idField:       c.String("id-field"),
		affinityField: c.String("affinity-field"),
	}
	if t := c.Timestamp("not-before"); t != nil {
		b.tmpl.NotBefore = *t
	}
	return b
}

// doSubmit writes the tasks of a checked file, a chunk at a time, reading
// the file again. Each chunk has 10 minutes to be written.
func doSubmit(c *cli.Context, in *submitInput, b *specBuilder, fc fileCheck) error {
	ecfg := etcdConfig(c)
	etcd, err := etcdconn.New(ecfg)
	if err != nil {
		return err
	}
	defer etcd.Close()
	if err := etcdconn.Ping(c.Context, etcd, ecfg.Endpoints, 10*time.Second); err != nil {
		return err
	}
	adm, err := workqueue.NewAdmission(workqueue.AdmissionConfig{Maintenance: etcd.Maintenance, Endpoints: ecfg.Endpoints, QuotaBytes: c.Int64("etcd-quota-bytes")})
	if err != nil {
		return err
	}
	store, err := workqueue.NewStore(etcd.KV, workqueue.Config{MaxTxnOps: c.Int("max-txn-ops"), PayloadLimit: c.Int("payload-limit"), Admission: adm})
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
	r, err := in.rewind()
	if err != nil {
		return cli.Exit("submit: "+err.Error(), 1)
	}
	ctx, stop := signalContext(c.Context)
	defer stop()
	maxPending := c.Int("max-pending")
	if maxPending == 0 {
		maxPending = workqueue.DefaultMaxPending(adm.Quota(), int(fc.payloadBytes/int64(fc.tasks)))
	}
	bounded := 0 // no bound needed: the whole file fits
	if fc.tasks > maxPending {
		bounded = maxPending
	}
	feed, err := startFeeder(ctx, store, etcd.Watcher, bounded, c.App.ErrWriter, opts)
	if err != nil {
		return err
	}
	defer feed.stop()
	bar := newProgress(c.App.ErrWriter, "submit", fc.tasks)
	if bounded > 0 {
		bar.pending, bar.every, bar.last = feed.pending, 10*time.Second, time.Now()
		fmt.Fprintf(c.App.ErrWriter, "%s: %d tasks, fed with at most %d unfinished at once (--max-pending)\n", in.name, fc.tasks, bounded)
	}
	start := time.Now()
	// One span for the file; its context is stored with every task, so each
	// task's claim, worker and answer spans join this trace.
	ctx, span := tp.Tracer(tracerName).Start(ctx, "baton.submit", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		workqueue.AttrTaskQueue.String(c.String("queue")),
		workqueue.AttrBatch.String(c.String("batch")),
		attribute.String("baton.submit.file", in.name),
		attribute.Int("baton.submit.tasks", fc.tasks),
		attribute.Int("baton.submit.max_pending", bounded),
	))
	traceparent := workqueue.FormatTraceparent(span.SpanContext())
	var (
		done, created, existing int
		pin                     *workqueue.Pin
	)
	chunks := newTaskChunks(r, b, min(submitChunk, maxPending))
	for err == nil {
		var specs []workqueue.Spec
		if specs, err = chunks.next(); err != nil {
			break
		}
		for i := range specs {
			specs[i].Traceparent = traceparent
		}
		base := done
		var n, e int
		var p *workqueue.Pin
		n, e, p, err = feed.write(ctx, specs, func(n int) { bar.set(base + n) })
		created, existing, done = created+n, existing+e, done+n+e
		if pin == nil {
			pin = p
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
		if done != fc.tasks {
			err = fmt.Errorf("%s changed after it was checked: %d tasks, %d when checked", in.name, done, fc.tasks)
		}
	}
	bar.finish()
	span.SetAttributes(attribute.Int("baton.submit.created", created), attribute.Int("baton.submit.existing", existing))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil {
		var inv *workqueue.InvalidError
		if errors.As(err, &inv) && done == 0 {
			return cli.Exit(err.Error(), 1)
		}
		return fmt.Errorf("submit %s: %w (the first %d of %d tasks were written or existed; they stay, and submitting the file again goes on from where it stands)", in.name, err, done, fc.tasks)
	}
	fmt.Fprintf(c.App.Writer, "submitted %s: %d tasks, %d created, %d existing, queue %s%s%s%s%s%s in %v\n",
		in.name, fc.tasks, created, existing, c.String("queue"), batchNote(c.String("batch")), feedNote(bounded), pinNote(pin),
		affinityNote(c.String("affinity-field"), fc.withAffinity), requireNote(b.tmpl.Require), time.Since(start).Round(time.Millisecond))
	return nil
}

func feedNote(maxPending int) string {
	if maxPending == 0 {
		return ""
	}
	return fmt.Sprintf(", at most %d unfinished at once", maxPending)
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
