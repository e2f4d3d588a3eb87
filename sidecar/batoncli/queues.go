package batoncli

import (
	"fmt"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
)

func queuesCommand() *cli.Command {
	return &cli.Command{
		Name:  "queues",
		Usage: "show queue depths; pause and resume hand-out",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "depth of every queue by state, the age of its oldest pending task, and ready entries that do not parse (MALFORMED)",
				Flags:  []cli.Flag{outputFlag()},
				Action: queuesList,
			},
			{
				Name:      "pause",
				Usage:     "stop handing out tasks of a queue (work in hand finishes; submit still accepted)",
				ArgsUsage: "QUEUE",
				Action:    func(c *cli.Context) error { return queuePause(c, true) },
			},
			{
				Name:      "resume",
				Usage:     "hand out tasks of a paused queue again",
				ArgsUsage: "QUEUE",
				Action:    func(c *cli.Context) error { return queuePause(c, false) },
			},
		},
	}
}

func queuesList(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	qs, err := store.Queues(c.Context)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(c.App.Writer, qs)
	}
	now := time.Now()
	rows := make([][]any, 0, len(qs))
	for _, q := range qs {
		paused := "no"
		if q.Paused {
			paused = "yes"
		}
		rows = append(rows, []any{q.Queue, q.Pending, q.Delayed, q.Claimed, age(now, q.OldestPendingMS), paused, q.Malformed})
	}
	if err := table(c.App.Writer, "QUEUE\tPENDING\tDELAYED\tCLAIMED\tOLDEST PENDING\tPAUSED\tMALFORMED", rows); err != nil {
		return err
	}
	// The footer: etcd's database against its quota (--etcd-quota-bytes),
	// which Submit's admission control holds.
	adm := store.Config().Admission
	size, err := adm.DBSize(c.Context)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "etcd database: %s of its %s quota (%.0f%%); submits are refused past %.0f%%\n",
		workqueue.FormatBytes(size), workqueue.FormatBytes(adm.Quota()), 100*float64(size)/float64(adm.Quota()), 100*workqueue.DefaultSubmitHighWater)
	return err
}

func queuePause(c *cli.Context, pause bool) error {
	if c.NArg() != 1 {
		return cli.Exit(fmt.Sprintf("queues %s: give one QUEUE", c.Command.Name), 2)
	}
	q := c.Args().First()
	if err := workqueue.ValidateQueue(q); err != nil {
		return cli.Exit(fmt.Sprintf("QUEUE: %v", err), 2)
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	if pause {
		changed, err := store.Pause(c.Context, q)
		if err != nil {
			return err
		}
		if !changed {
			fmt.Fprintf(c.App.Writer, "queue %s is paused already\n", q)
			return nil
		}
		fmt.Fprintf(c.App.Writer, "queue %s paused: no new tasks are handed out; claims in hand finish\n", q)
		return nil
	}
	changed, err := store.Resume(c.Context, q)
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(c.App.Writer, "queue %s is not paused\n", q)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "queue %s resumed\n", q)
	return nil
}
