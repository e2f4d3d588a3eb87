package batoncli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/internal/bench"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure Baton against raw etcd, etcd's recipes.Queue and naive compare-and-swap, on one etcd",
		UsageText: "baton bench [--consumers 1,8,32,128] [--tasks 1000] [--json] [--plot FILE.png]",
		Description: "Starts an embedded etcd (unless --endpoints is given) and, at each consumer count, measures:\n" +
			"  ceiling  raw etcd write transactions per second (the limit for anything on this etcd)\n" +
			"  recipes  etcd's client/v3/experimental/recipes Queue (Enqueue, Dequeue)\n" +
			"  naive    every consumer reads the first pending task and compare-and-swaps it\n" +
			"  baton    `baton sidecar` processes; consumers attach, then Next and Complete over the socket\n" +
			"each with the same consumers and --tasks tasks, under its own key prefix. Then the sidecar's\n" +
			"overhead (claim and lock through the socket against the same done directly) and the claim\n" +
			"cost at each --depths queue depth. The table (or --json) goes to stdout, progress to stderr.\n" +
			"With --endpoints, everything is written under NAMESPACE.bench.<time>/ and deleted afterwards;\n" +
			"do not point it at a production cluster: it loads etcd as hard as it can.",
		Flags: []cli.Flag{
			&cli.IntSliceFlag{Name: "consumers", Value: cli.NewIntSlice(bench.DefaultConsumers...), EnvVars: []string{"BATON_BENCH_CONSUMERS"}, Usage: "consumer counts to sweep (comma separated)"},
			&cli.IntFlag{Name: "tasks", Value: bench.DefaultTasks, EnvVars: []string{"BATON_BENCH_TASKS"}, Usage: "tasks each system delivers at each consumer count (the ceiling writes 5 × as many transactions)"},
			&cli.IntFlag{Name: "sidecars", Value: bench.DefaultSidecars, EnvVars: []string{"BATON_BENCH_SIDECARS"}, Usage: "sidecar processes for baton (fewer with fewer consumers), and etcd connections for the others"},
			&cli.StringSliceFlag{Name: "systems", Value: cli.NewStringSlice(bench.Systems...), Usage: "systems to measure: " + strings.Join(bench.Systems, ", ")},
			&cli.IntFlag{Name: "dispatch-samples", Value: bench.DefaultDispatchSamples, Usage: "tasks submitted one at a time to idle workers, for baton's dispatch latency"},
			&cli.IntFlag{Name: "samples", Value: bench.DefaultSamples, Usage: "round trips timed for the overhead and queue depth measurements"},
			&cli.IntSliceFlag{Name: "depths", Value: cli.NewIntSlice(bench.DefaultDepths...), Usage: "queue depths (pending tasks) at which to time claims"},
			&cli.BoolFlag{Name: "skip-depth", Usage: "leave out the queue depth measurement"},
			&cli.BoolFlag{Name: "skip-overhead", Usage: "leave out the sidecar overhead measurement"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (same as -o json)"},
			outputFlag(),
			&cli.StringFlag{Name: "plot", Usage: "also draw tasks/s against consumers into this PNG file"},
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
		Progress:        c.App.ErrWriter,
	}
	if err := cfg.Validate(); err != nil {
		return cli.Exit(err.Error(), 2)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the baton binary for the sidecar processes: %w", err)
	}
	cfg.Sidecar = bench.Exe{Path: exe}

	ctx, stop := signalContext(c.Context)
	defer stop()
	cfg.Etcd = etcdConfig(c)
	cfg.Etcd.Namespace = fmt.Sprintf("%s.bench.%d", strings.TrimSuffix(cfg.Etcd.Namespace, "/"), time.Now().Unix())
	if !c.IsSet("endpoints") {
		startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		etcd, err := embedetcd.Start(startCtx, embedetcd.Config{})
		cancel()
		if err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
		defer etcd.Close()
		cfg.Etcd.Endpoints = []string{etcd.Endpoint()}
		cfg.Embedded = true
		fmt.Fprintf(c.App.ErrWriter, "embedded etcd on %s\n", etcd.Endpoint())
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
