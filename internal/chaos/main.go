package chaos

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/childproc"
)

// Main is the baton-chaos command: it parses args, runs one scenario and
// prints its summary. It returns the exit code: 0 when every invariant
// held, 1 on a violation, 2 when the run could not be carried out.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("baton-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Int64("seed", 0, "seed of the task mix and the fault sequence (0: from the clock; printed)")
	duration := fs.Duration("duration", 150*time.Second, "how long faults are injected")
	tasks := fs.Int("tasks", 300, "tasks to submit")
	timeout := fs.Duration("timeout", 9*time.Minute, "give up (exit 2) after this long")
	sidecars := fs.Int("sidecars", 8, "sidecar processes (one worker container each in production; the scheduler is one of them)")
	workers := fs.Int("workers", 2, "worker processes per sidecar")
	ttl := fs.Duration("ttl", 3*time.Second, "the sidecars' lease TTL")
	faults := fs.String("faults", strings.Join(AllFaults, ","), "fault kinds to draw from")
	keep := fs.Bool("keep", false, "keep the run directory (logs, etcd data) even when the run passes")
	quiet := fs.Bool("quiet", false, "print only the summary")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "baton-chaos:", err)
		return 2
	}
	dir, err := DirFor(*seed)
	if err != nil {
		fmt.Fprintln(stderr, "baton-chaos:", err)
		return 2
	}
	fmt.Fprintf(stdout, "baton-chaos: seed %d (replay with SEED=%d), logs in %s\n", *seed, *seed, dir)
	cfg := Config{Seed: *seed, Exe: childproc.Exe{Path: exe}, Dir: dir, Sidecars: *sidecars, WorkersPer: *workers,
		Tasks: *tasks, Duration: *duration, TTL: *ttl, Faults: strings.Split(*faults, ","), Log: stdout}
	if *quiet {
		cfg.Log = nil
	}
	for _, f := range cfg.Faults {
		if !slicesContains(AllFaults, f) {
			fmt.Fprintf(stderr, "baton-chaos: faults: unknown kind %q (known: %s)\n", f, strings.Join(AllFaults, ","))
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "baton-chaos: seed %d: %v (logs in %s)\n", *seed, err, dir)
		return 2
	}
	res.WriteSummary(stdout)
	if res.Failed() {
		fmt.Fprintf(stdout, "logs kept in %s\n", dir)
		return 1
	}
	if !*keep {
		os.RemoveAll(dir)
	}
	return 0
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
