package batoncli

import (
	"fmt"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show the operator actions recorded in etcd",
		Description: "Every operator action that changes something (tasks cancel and retry, queues pause and resume,\n" +
			"config set) is recorded in the same etcd transaction as the action: what, on what, and who (OS user\n" +
			"and uid, host, pid, etcd user). The newest 10,000 records of the last 90 days are kept.",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "the latest operator actions, oldest first",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 100, Usage: "most records to show, the newest; 0 for all"},
					outputFlag(),
				},
				Action: withEtcd(func(c *cli.Context) error {
					if c.Int("limit") < 0 {
						return cli.Exit("limit: must not be negative", 2)
					}
					return nil
				}, auditList),
			},
		},
	}
}

func auditList(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
	recs, more, skipped, err := audit.List(c.Context, etcd.KV, c.Int("limit"))
	if err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(c.App.ErrWriter, "%d records do not decode and are not shown\n", skipped)
	}
	if more {
		fmt.Fprintf(c.App.ErrWriter, "showing the newest %d records; use --limit to see more\n", len(recs))
	}
	if asJSON {
		if recs == nil {
			recs = []audit.Record{}
		}
		return writeJSON(c.App.Writer, recs)
	}
	rows := make([][]any, 0, len(recs))
	for _, r := range recs {
		detail := r.Detail
		if r.Via != "" {
			detail = strings.TrimSpace(detail + " (via " + r.Via + ")")
		}
		rows = append(rows, []any{r.Time().UTC().Format(time.RFC3339), r.Action, r.Object, fmt.Sprintf("%s(%d)", orDash(r.User), r.UID),
			fmt.Sprintf("%s:%d", orDash(r.Host), r.PID), orDash(r.EtcdUser), r.Revision, orDash(safe(detail))})
	}
	return table(c.App.Writer, "TIME\tACTION\tOBJECT\tUSER(UID)\tHOST:PID\tETCD USER\tREVISION\tDETAIL", rows)
}
