package batoncli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "read, write and watch the configuration documents workers share",
		Description: "A configuration document is a named JSON object, for example `global` with\n" +
			"sample_rate, seed, output_dir and use_kv_cache. Workers read it with ConfigService.Get and follow it\n" +
			"with ConfigService.Watch; `baton submit --pin-config NAME` hands a batch's tasks the version that\n" +
			"was current at submit.",
		Subcommands: []*cli.Command{
			configGetCommand(),
			configSetCommand(),
			configWatchCommand(),
			configHistoryCommand(),
			configListCommand(),
		},
	}
}

// readInput reads a file, or standard input for "-".
func readInput(c *cli.Context, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(c.App.Reader)
	}
	return os.ReadFile(name)
}

// oneName checks that the command has one argument, a document name.
func oneName(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit(fmt.Sprintf("%s: give one document NAME", c.Command.FullName()), 2)
	}
	if err := configdoc.ValidateName(c.Args().First()); err != nil {
		return cli.Exit(fmt.Sprintf("%s: name: %v", c.Command.FullName(), err), 2)
	}
	return nil
}

// prettyJSON indents a compact JSON document.
func prettyJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}

func configGetCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "print the current version of a document",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{outputFlag()},
		Action: withEtcd(oneName, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
			name := c.Args().First()
			d, err := configdoc.NewStore(etcd.KV, nil, configdoc.Config{}).Get(c.Context, name)
			if errors.Is(err, configdoc.ErrNotFound) {
				return cli.Exit(fmt.Sprintf("config %q is not set; set it with `baton config set %s FILE`", name, name), 1)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.App.Writer, d)
			}
			fmt.Fprintf(c.App.Writer, "# %s, revision %d\n%s\n", d.Name, d.Revision, prettyJSON(d.Data))
			return nil
		}),
	}
}

func configSetCommand() *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "make FILE (a JSON object; - for standard input) the current version of a document",
		ArgsUsage: "NAME FILE|-",
		Description: "The document is checked first: it must be one JSON object and meet the document's JSON Schema,\n" +
			"if one is registered. --schema registers (or replaces) the schema in the same step. The version it\n" +
			"replaces is kept (`baton config history`). Setting the same document again changes nothing.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "schema", Usage: "JSON Schema `FILE` to register for the document; later versions must meet it"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return cli.Exit("config set: give NAME and FILE (a JSON object), or - for standard input", 2)
			}
			name, file := c.Args().Get(0), c.Args().Get(1)
			if err := configdoc.ValidateName(name); err != nil {
				return cli.Exit(fmt.Sprintf("config set: name: %v", err), 2)
			}
			asJSON, err := jsonOutput(c)
			if err != nil {
				return err
			}
			doc, err := readInput(c, file)
			if err != nil {
				return err
			}
			if _, err := configdoc.ValidateObject(doc); err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v; nothing was written", inputName(file), err), 1)
			}
			var opts []configdoc.SetOption
			if sf := c.String("schema"); sf != "" {
				schema, err := os.ReadFile(sf)
				if err != nil {
					return err
				}
				if _, err := configdoc.CompileSchema(schema); err != nil {
					return cli.Exit(fmt.Sprintf("%s: %v; nothing was written", sf, err), 1)
				}
				opts = append(opts, configdoc.WithSchema(schema))
			}
			etcd, _, err := connect(c)
			if err != nil {
				return err
			}
			defer etcd.Close()
			aw, err := auditWriter(c, etcd)
			if err != nil {
				return err
			}
			store := configdoc.NewStore(etcd.KV, nil, configdoc.Config{Audit: aw})
			before, err := store.Get(c.Context, name)
			if err != nil && !errors.Is(err, configdoc.ErrNotFound) {
				return err
			}
			d, err := store.Set(c.Context, name, doc, opts...)
			var inv *configdoc.InvalidError
			if errors.As(err, &inv) {
				return cli.Exit(fmt.Sprintf("%s: %v; nothing was written", inputName(file), inv.Err), 1)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.App.Writer, d)
			}
			switch {
			case d.Revision == before.Revision:
				fmt.Fprintf(c.App.Writer, "%s: unchanged at revision %d\n", name, d.Revision)
			case before.Revision == 0:
				fmt.Fprintf(c.App.Writer, "%s: revision %d (new)\n", name, d.Revision)
			default:
				fmt.Fprintf(c.App.Writer, "%s: revision %d (was %d)\n", name, d.Revision, before.Revision)
			}
			return nil
		},
	}
}

func inputName(file string) string {
	if file == "-" {
		return "<stdin>"
	}
	return file
}

func configWatchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "print a document now and each time it changes, until interrupted",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "after", Usage: "print only versions newer than this revision"},
			outputFlag(),
		},
		Action: withEtcd(oneName, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
			store := configdoc.NewStore(etcd.KV, etcd.Watcher, configdoc.Config{})
			err := store.Watch(c.Context, c.Args().First(), c.Int64("after"), func(d configdoc.Document) error {
				if asJSON {
					// One JSON object per line, for scripts that read a stream.
					b, _ := json.Marshal(d)
					_, err := fmt.Fprintf(c.App.Writer, "%s\n", b)
					return err
				}
				_, err := fmt.Fprintf(c.App.Writer, "revision %d: %s\n", d.Revision, d.Data)
				return err
			})
			if c.Context.Err() != nil {
				return nil // interrupted
			}
			return err
		}),
	}
}

func configHistoryCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "list the kept versions of a document, newest first",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{outputFlag()},
		Action: withEtcd(oneName, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
			name := c.Args().First()
			docs, err := configdoc.NewStore(etcd.KV, nil, configdoc.Config{}).History(c.Context, name)
			if errors.Is(err, configdoc.ErrNotFound) {
				return cli.Exit(fmt.Sprintf("config %q is not set", name), 1)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.App.Writer, docs)
			}
			rows := make([][]any, 0, len(docs))
			for i, d := range docs {
				rev := fmt.Sprint(d.Revision)
				if i == 0 {
					rev += " (current)"
				}
				rows = append(rows, []any{rev, truncateText(string(d.Data), 100)})
			}
			return table(c.App.Writer, "REVISION\tDOCUMENT", rows)
		}),
	}
}

func configListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the documents with their current revision",
		Flags: []cli.Flag{outputFlag()},
		Action: withEtcd(nil, func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error {
			store := configdoc.NewStore(etcd.KV, nil, configdoc.Config{})
			names, err := store.Names(c.Context)
			if err != nil {
				return err
			}
			docs := make([]configdoc.Document, 0, len(names))
			for _, n := range names {
				d, err := store.Get(c.Context, n)
				if errors.Is(err, configdoc.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				docs = append(docs, d)
			}
			if asJSON {
				return writeJSON(c.App.Writer, docs)
			}
			rows := make([][]any, 0, len(docs))
			for _, d := range docs {
				rows = append(rows, []any{d.Name, d.Revision, truncateText(string(d.Data), 80)})
			}
			return table(c.App.Writer, "NAME\tREVISION\tDOCUMENT", rows)
		}),
	}
}

// truncateText shortens s to n runes, marking the cut.
func truncateText(s string, n int) string {
	r := []rune(strings.TrimSpace(s))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-1]) + "…"
}
