package batoncli

import (
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func locksCommand() *cli.Command {
	return &cli.Command{
		Name:  "locks",
		Usage: "show the locks that sessions hold and wait for",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every held lock: its fencing token, its holder (worker, process, session) and how many wait in line; -o json lists the waiters",
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
						o := l.Holder.Owner
						rows = append(rows, []any{l.Name, l.Holder.Token, orDash(o.WorkerID), orDash(o.Process), orDash(o.Session), len(l.Waiters)})
					}
					return table(c.App.Writer, "LOCK\tTOKEN\tWORKER\tPROCESS\tSESSION\tWAITERS", rows)
				}),
			},
		},
	}
}
