package batoncli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/registry"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func workersCommand() *cli.Command {
	return &cli.Command{
		Name:  "workers",
		Usage: "show the live workers, one per sidecar",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every registered sidecar: its worker id, host, queues, tasks in hand, labels and the processes attached to it (entries vanish when a sidecar dies)",
				Flags: []cli.Flag{outputFlag()},
				Action: withEtcd(nil, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
					ws, err := registry.List(c.Context, etcd.KV)
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(c.App.Writer, ws)
					}
					now := time.Now()
					rows := make([][]any, 0, len(ws))
					for _, w := range ws {
						rows = append(rows, []any{w.WorkerID, fmt.Sprintf("%s:%d", w.Host, w.PID), strings.Join(w.Queues, ","), w.InHand, labels(w.Labels), processes(w.Sessions), w.Version, age(now, w.StartedMS)})
					}
					return table(c.App.Writer, "WORKER\tHOST:PID\tQUEUES\tIN HAND\tLABELS\tPROCESSES\tVERSION\tUP", rows)
				}),
			},
		},
	}
}

// processes names the processes attached to a sidecar, oldest first: the
// name each attached with, else its pid; "-" for none.
func processes(ss []registry.Session) string {
	if len(ss) == 0 {
		return "-"
	}
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		switch {
		case s.Process != "":
			names = append(names, s.Process)
		case s.PID != 0:
			names = append(names, fmt.Sprintf("pid %d", s.PID))
		default:
			names = append(names, "?")
		}
	}
	return strings.Join(names, ",")
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	kv := make([]string, 0, len(m))
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}
