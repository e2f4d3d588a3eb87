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
		Usage: "show the live sidecars",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every registered sidecar: id, host, queues, labels, tasks in hand (entries vanish when a sidecar dies)",
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
						rows = append(rows, []any{w.WorkerID, fmt.Sprintf("%s:%d", w.Host, w.PID), strings.Join(w.Queues, ","), w.InHand, labels(w.Labels), w.Version, age(now, w.StartedMS)})
					}
					return table(c.App.Writer, "WORKER\tHOST:PID\tQUEUES\tIN HAND\tLABELS\tVERSION\tUP", rows)
				}),
			},
		},
	}
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
