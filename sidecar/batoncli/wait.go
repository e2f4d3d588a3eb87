package batoncli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Exit codes of `baton wait`.
const (
	waitFailed  = 1 // the batch ended with tasks not DONE
	waitTimeout = 3 // --timeout passed first
)

func waitCommand() *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "wait until every task of a batch is finished; exit 0 only when all are DONE",
		ArgsUsage: "BATCH (or --batch BATCH)",
		Description: "Follows the batch with an etcd watch. On a terminal it draws a progress bar (done/dead/total,\n" +
			"rate, ETA) on stderr; otherwise it prints a progress line at most once a second. The summary\n" +
			"goes to stdout. Exit codes: 0 every task DONE; 1 the batch ended with tasks DEAD, CANCELLED or\n" +
			"removed; 2 bad usage or no such batch; 3 --timeout passed first.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "batch", Usage: "batch id given to baton submit --batch (or as the argument)"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (default: wait for ever)"},
			outputFlag(),
		},
		Action: waitAction,
	}
}

func waitAction(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	batch, err := waitBatch(c)
	if err != nil {
		return err
	}
	if err := workqueue.ValidateBatch(batch); err != nil {
		return cli.Exit(fmt.Sprintf("batch: %v", err), 2)
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	ctx, stop := signalContext(c.Context)
	defer stop()
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	bar := newWaitBar(c.App.ErrWriter, batch)
	counts, err := store.BatchWatch(ctx, etcd.Watcher, batch, func(bc workqueue.BatchCounts) bool {
		bar.update(bc)
		return true
	})
	bar.finish(counts)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	if counts.Total == 0 {
		return cli.Exit(fmt.Sprintf("batch %s has no tasks", batch), 2)
	}
	finished := counts.Finished() == counts.Total
	allDone := counts.States[workqueue.StateDone] == counts.Total
	if asJSON {
		if werr := writeJSON(c.App.Writer, map[string]any{"batch": batch, "total": counts.Total, "states": counts.States, "finished": finished, "all_done": allDone}); werr != nil {
			return werr
		}
	} else {
		fmt.Fprintf(c.App.Writer, "batch %s: %s\n", batch, summary(counts))
	}
	switch {
	case !finished && ctx.Err() != nil && c.Context.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return cli.Exit(fmt.Sprintf("batch %s not finished within %v", batch, c.Duration("timeout")), waitTimeout)
	case !finished:
		return cli.Exit(fmt.Sprintf("batch %s: stopped waiting before it finished", batch), waitFailed)
	case !allDone:
		return cli.Exit(fmt.Sprintf("batch %s finished with %d of %d tasks not DONE", batch, counts.Total-counts.States[workqueue.StateDone], counts.Total), waitFailed)
	}
	return nil
}

// waitBatch is the batch to wait for: the argument or --batch (the same
// one when both are given).
func waitBatch(c *cli.Context) (string, error) {
	flag := c.String("batch")
	switch args := c.Args().Slice(); {
	case len(args) > 1:
		return "", cli.Exit(fmt.Sprintf("batch: one batch id expected, got %d arguments (%s)", len(args), strings.Join(args, " ")), 2)
	case len(args) == 1 && flag != "" && flag != args[0]:
		return "", cli.Exit(fmt.Sprintf("batch: the argument %q and --batch %q differ; give one", args[0], flag), 2)
	case len(args) == 1:
		return args[0], nil
	case flag == "":
		return "", cli.Exit("batch: give the batch id, as in `baton wait BATCH` or `baton wait --batch BATCH`", 2)
	}
	return flag, nil
}

// summary lists the counts in lifecycle order, zeros left out.
func summary(bc workqueue.BatchCounts) string {
	parts := []string{fmt.Sprintf("%d tasks", bc.Total)}
	for _, s := range []workqueue.State{workqueue.StateDone, workqueue.StateDead, workqueue.StateCancelled, workqueue.StateRemoved, workqueue.StatePending, workqueue.StateClaimed, workqueue.StateFailed} {
		if n := bc.States[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	return strings.Join(parts, ", ")
}

// waitBar shows a batch's progress: a redrawn bar on a terminal, a line at
// most once a second otherwise.
type waitBar struct {
	w         io.Writer
	tty       bool
	batch     string
	start     time.Time
	last      time.Time
	firstDone int // finished when waiting began, for the rate
	seen      bool
	lastLine  string
}

func newWaitBar(w io.Writer, batch string) *waitBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &waitBar{w: w, tty: tty, batch: batch, start: time.Now()}
}

func (b *waitBar) line(bc workqueue.BatchCounts) string {
	fin := bc.Finished()
	elapsed := time.Since(b.start)
	rate := float64(fin-b.firstDone) / max(elapsed.Seconds(), 1e-3)
	eta := "-"
	if rate > 0 && fin < bc.Total {
		eta = (time.Duration(float64(bc.Total-fin) / rate * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("done %d dead %d of %d  %.1f/s  ETA %s", bc.States[workqueue.StateDone], bc.States[workqueue.StateDead]+bc.States[workqueue.StateCancelled], bc.Total, rate, eta)
}

func (b *waitBar) update(bc workqueue.BatchCounts) {
	if !b.seen {
		b.seen, b.firstDone = true, bc.Finished()
	}
	if time.Since(b.last) < time.Second && !b.tty || time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	b.draw(bc)
}

func (b *waitBar) draw(bc workqueue.BatchCounts) {
	l := b.line(bc)
	if !b.tty {
		if l != b.lastLine {
			fmt.Fprintf(b.w, "batch %s: %s\n", b.batch, l)
			b.lastLine = l
		}
		return
	}
	const width = 30
	frac := 1.0
	if bc.Total > 0 {
		frac = float64(bc.Finished()) / float64(bc.Total)
	}
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%s [%s%s] %s ", b.batch, strings.Repeat("=", n), strings.Repeat(" ", width-n), l)
}

func (b *waitBar) finish(bc workqueue.BatchCounts) {
	if bc.Total == 0 {
		return
	}
	b.draw(bc)
	if b.tty {
		fmt.Fprintln(b.w)
	}
}
