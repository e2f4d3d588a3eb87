package batoncli

import (
	"fmt"

	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func locksCommand() *cli.Command {
	return &cli.Command{
		Name:  "locks",
		Usage: "show the locks workers hold and wait for",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every held lock: its holder, fencing token and waiters in line",
				Flags: []cli.Flag{outputFlag()},
				Action: withEtcd(nil, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
					locks, err := namedlock.ListLocks(c.Context, etcd.KV)
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(c.App.Writer, locks)
					}
					rows := make([][]any, 0, len(locks))
					for _, l := range locks {
						rows = append(rows, []any{l.Name, l.Holder.Token, lockHolder(l.Holder.Owner), len(l.Waiters)})
					}
					return table(c.App.Writer, "LOCK\tTOKEN\tHOLDER\tWAITERS", rows)
				}),
			},
		},
	}
}

// lockHolder names who holds a lock: sidecar, worker process and session.
func lockHolder(o namedlock.LockOwner) string {
	if o.WorkerID == "" {
		return "-"
	}
	s := o.WorkerID
	if o.Worker != "" {
		s += "/" + o.Worker
	}
	return fmt.Sprintf("%s (%s)", s, o.Session)
}
