package batoncli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/bench"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure Baton as deployed (one sidecar per worker, fleets of them) and against the alternatives, on one etcd",
		UsageText: "baton bench [--fleet 8,64,256] [--fleet-tasks 1000] [--systems all] [--json] [--plot FILE.png]",
		Description: "Starts etcd in a process of its own (unless --endpoints is given), then by default:\n" +
			"  fleet     at each --fleet size N, N sidecars inside this process (each with its own etcd client,\n" +
			"            lease, watch and socket) and one consumer per sidecar: dispatch to N idle workers\n" +
			"            (--dispatch-samples tasks one at a time), then a --fleet-tasks backlog drained by the N\n" +
			"            workers. Per task: etcd write txns (failed compares included), watch events and bytes\n" +
			"            etcd sent (from etcd's /metrics), CPU of this process (the fleet AND its consumers)\n" +
			"            and of etcd. Use a single-member etcd: its metrics are read from the first endpoint.\n" +
			"  affinity  16 sidecars, 32 speakers: the share of tasks whose speaker was the worker's previous\n" +
			"            one, and tasks/s, with and without affinity keys.\n" +
			"The targets of issue 12 are reported as met or missed. --fleet 1000 runs on 2 cores.\n\n" +
			"The older comparison is opt-in (--systems all, or a list): at each --consumers count,\n" +
			"  ceiling  raw etcd write transactions per second (the limit for anything on this etcd)\n" +
			"  recipes  etcd's client/v3/experimental/recipes Queue (Enqueue, Dequeue)\n" +
			"  naive    every consumer reads the first pending task and compare-and-swaps it\n" +
			"  baton    `baton sidecar` processes; consumers attach, then Next and Complete over the socket\n" +
			"each with the same consumers and --tasks tasks, under its own key prefix. Then the sidecar's\n" +
			"overhead (claim and lock through the socket against the same done directly) and the claim\n" +
			"cost at each --depths queue depth (--skip-overhead, --skip-depth). The old default run is\n" +
			"`baton bench --systems all --skip-fleet --skip-affinity`.\n" +
			"The table (or --json) goes to stdout, progress to stderr.\n\n" +
			"--batch measures a big batch instead: a file of --batch-lines GLM-TTS lines is submitted by a\n" +
			"`baton submit` child process with no bound and no workers (lines/s, peak RSS, etcd bytes per\n" +
			"pending task after compaction and defragmentation), drained by --batch-workers in-process\n" +
			"sidecars (time, bytes per finished task), then drained again in a fresh namespace while\n" +
			"`baton submit --max-pending` feeds it (time to the last completion, the submit's peak RSS).\n" +
			"--batch-skip-drain leaves out the first drain (for a big file: the fed drain is the one that\n" +
			"matters, and the first doubles the run). On the run's own etcd (no --endpoints) the first submit\n" +
			"writes under NAMESPACE itself, so that keys are as long as a deployment's.\n" +
			"With --endpoints, everything is written under namespaces NAMESPACE.bench.<time>.* and deleted afterwards;\n" +
			"do not point it at a production cluster: it loads etcd as hard as it can.",
		Flags: []cli.Flag{
			&cli.IntSliceFlag{Name: "fleet", Value: cli.NewIntSlice(bench.DefaultFleet...), EnvVars: []string{"BATON_BENCH_FLEET"}, Usage: "fleet sizes to sweep: sidecars, one worker each (comma separated)"},
			&cli.IntFlag{Name: "fleet-tasks", Value: bench.DefaultTasks, EnvVars: []string{"BATON_BENCH_FLEET_TASKS"}, Usage: "backlog each fleet drains, and the tasks of each affinity run"},
			&cli.BoolFlag{Name: "skip-fleet", Usage: "leave out the fleet sweep"},
			&cli.BoolFlag{Name: "skip-affinity", Usage: "leave out the affinity run"},
			&cli.StringFlag{Name: "etcd-metrics", Usage: "URL of etcd's Prometheus metrics (default: http://FIRST-ENDPOINT/metrics)"},
			&cli.IntSliceFlag{Name: "consumers", Value: cli.NewIntSlice(bench.DefaultConsumers...), EnvVars: []string{"BATON_BENCH_CONSUMERS"}, Usage: "consumer counts to sweep (comma separated)"},
			&cli.IntFlag{Name: "tasks", Value: bench.DefaultTasks, EnvVars: []string{"BATON_BENCH_TASKS"}, Usage: "tasks each system delivers at each consumer count (the ceiling writes 5 × as many transactions)"},
			&cli.IntFlag{Name: "sidecars", Value: bench.DefaultSidecars, EnvVars: []string{"BATON_BENCH_SIDECARS"}, Usage: "sidecar processes for baton (fewer with fewer consumers), and etcd connections for the others"},
			&cli.StringSliceFlag{Name: "systems", Usage: "systems to compare at each --consumers count (default none): " + strings.Join(bench.Systems, ", ") + ", or " + bench.SystemsAll},
			&cli.IntFlag{Name: "dispatch-samples", Value: bench.DefaultDispatchSamples, Usage: "tasks submitted one at a time to idle workers, for baton's dispatch latency"},
			&cli.IntFlag{Name: "samples", Value: bench.DefaultSamples, Usage: "round trips timed for the overhead and queue depth measurements"},
			&cli.IntSliceFlag{Name: "depths", Value: cli.NewIntSlice(bench.DefaultDepths...), Usage: "queue depths (pending tasks) at which to time claims"},
			&cli.BoolFlag{Name: "skip-depth", Usage: "leave out the queue depth measurement"},
			&cli.BoolFlag{Name: "skip-overhead", Usage: "leave out the sidecar overhead measurement"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (same as -o json)"},
			outputFlag(),
			&cli.StringFlag{Name: "plot", Usage: "also draw the fleet sweep (and the systems, when compared) into this PNG file"},
			&cli.BoolFlag{Name: "batch", Usage: "measure a big batch instead (only that): etcd bytes per pending and per finished task, baton submit's throughput and peak RSS, and the drain by --batch-workers fed by baton submit --max-pending"},
			&cli.IntFlag{Name: "batch-lines", Value: 1_000_000, Usage: "lines of the --batch file (GLM-TTS lines of 246 bytes)"},
			&cli.IntFlag{Name: "batch-workers", Value: 64, Usage: "sidecars (in this process), one worker each, that drain the --batch file"},
			&cli.IntFlag{Name: "batch-max-pending", Usage: "--max-pending of the fed drain (default: a tenth of --batch-lines)"},
			&cli.BoolFlag{Name: "batch-skip-drain", Usage: "leave out the drain of the unbounded submit's tasks (and the bytes per finished task): the submit is measured, its tasks deleted, then the fed drain runs"},
		},
		Action: runBench,
	}
}

func runBench(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	asJSON = asJSON || c.Bool("json")
	if c.Bool("batch") {
		return runBatchBench(c, asJSON)
	}
	if p := c.String("plot"); p != "" && !strings.HasSuffix(strings.ToLower(p), ".png") {
		return cli.Exit(fmt.Sprintf("plot: %q does not end in .png", p), 2)
	}
	cfg := bench.Config{
		Systems:         c.StringSlice("systems"),
		Consumers:       c.IntSlice("consumers"),
		Tasks:           c.Int("tasks"),
		Sidecars:        c.Int("sidecars"),
		DispatchSamples: c.Int("dispatch-samples"),
		Samples:         c.Int("samples"),
		Depths:          c.IntSlice("depths"),
		SkipDepth:       c.Bool("skip-depth"),
		SkipOverhead:    c.Bool("skip-overhead"),
		Fleet:           c.IntSlice("fleet"),
		FleetTasks:      c.Int("fleet-tasks"),
		SkipFleet:       c.Bool("skip-fleet"),
		SkipAffinity:    c.Bool("skip-affinity"),
		EtcdMetrics:     c.String("etcd-metrics"),
		Progress:        c.App.ErrWriter,
	}
	if err := cfg.Validate(); err != nil {
		return cli.Exit(err.Error(), 2)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the baton binary for the sidecar processes: %w", err)
	}
	cfg.Sidecar = childproc.Exe{Path: exe}

	ctx, stop := signalContext(c.Context)
	defer stop()
	cfg.Etcd = etcdConfig(c)
	cfg.Etcd.Namespace = fmt.Sprintf("%s.bench.%d", strings.TrimSuffix(cfg.Etcd.Namespace, "/"), time.Now().Unix())
	if !c.IsSet("endpoints") {
		etcd, err := bench.StartEtcd(ctx, cfg.Sidecar, 0)
		if err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
		defer etcd.Stop()
		cfg.Etcd.Endpoints = []string{etcd.Endpoint()}
		cfg.Embedded = true
		cfg.EtcdPID = etcd.PID()
		fmt.Fprintf(c.App.ErrWriter, "embedded etcd on %s (pid %d)\n", etcd.Endpoint(), etcd.PID())
	} else {
		fmt.Fprintf(c.App.ErrWriter, "etcd at %s, keys under %s/\n", strings.Join(cfg.Etcd.Endpoints, ","), cfg.Etcd.Namespace)
	}

	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if p := c.String("plot"); p != "" {
		if err := writePlot(rep, p); err != nil {
			return err
		}
	}
	if asJSON {
		return rep.WriteJSON(c.App.Writer)
	}
	return rep.WriteTable(c.App.Writer)
}

// benchEtcdCommand is the etcd process of `baton bench` (bench.StartEtcd
// starts it); hidden, as it serves nothing else.
func benchEtcdCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench-etcd",
		Usage:  "run the etcd of baton bench (started by baton bench)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "quota-bytes", Usage: "etcd's --quota-backend-bytes (0: etcd's 2 GiB)"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signalContext(c.Context)
			defer stop()
			return bench.ServeEtcd(ctx, c.App.Reader, c.App.Writer, c.Int64("quota-bytes"))
		},
	}
}

func writePlot(rep *bench.Report, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := rep.WritePlot(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// runBatchBench is `baton bench --batch`.
func runBatchBench(c *cli.Context, asJSON bool) error {
	lines, workers, maxPending := c.Int("batch-lines"), c.Int("batch-workers"), c.Int("batch-max-pending")
	switch {
	case lines < 1:
		return cli.Exit(fmt.Sprintf("batch-lines: %d: must be at least 1", lines), 2)
	case workers < 1:
		return cli.Exit(fmt.Sprintf("batch-workers: %d: must be at least 1", workers), 2)
	case maxPending < 0:
		return cli.Exit(fmt.Sprintf("batch-max-pending: %d: must be at least 1 (0: the default)", maxPending), 2)
	case maxPending == 0:
		maxPending = max(1, lines/10)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the baton binary for baton submit: %w", err)
	}
	dir, err := os.MkdirTemp("", "baton-bench-batch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, stop := signalContext(c.Context)
	defer stop()
	cfg := bench.BatchConfig{Baton: childproc.Exe{Path: exe}, Lines: lines, Workers: workers, MaxPending: maxPending, SkipDrain: c.Bool("batch-skip-drain"), Dir: dir, Progress: c.App.ErrWriter}
	cfg.Etcd = etcdConfig(c)
	deployed := cfg.Etcd.Namespace
	cfg.Etcd.Namespace = fmt.Sprintf("%s.bench.%d", strings.TrimSuffix(cfg.Etcd.Namespace, "/"), time.Now().Unix())
	cfg.QuotaBytes = c.Int64("etcd-quota-bytes")
	if !c.IsSet("endpoints") {
		// The etcd is the run's own: the bytes are measured under the
		// deployment's namespace, with keys as long as its.
		cfg.SubmitNamespace = deployed
		// The largest quota etcd suggests: a fed drain of 1M tasks keeps
		// them finished (~1 GB) plus ~2 KB of history each until a
		// compaction, and the database file shrinks only on a
		// defragmentation, which the run does between its phases only.
		cfg.QuotaBytes = 8 << 30
		etcd, err := bench.StartEtcd(ctx, cfg.Baton, cfg.QuotaBytes)
		if err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
		defer etcd.Stop()
		cfg.Etcd.Endpoints = []string{etcd.Endpoint()}
		fmt.Fprintf(c.App.ErrWriter, "embedded etcd on %s (pid %d)\n", etcd.Endpoint(), etcd.PID())
	}
	rep, err := bench.RunBatch(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return rep.WriteJSON(c.App.Writer)
	}
	return rep.WriteText(c.App.Writer)
}
