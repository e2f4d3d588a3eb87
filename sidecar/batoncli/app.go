// Package batoncli builds the `baton` command line. cmd/baton only calls
// Main; tests run the same app with Main and captured writers.
package batoncli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
)

// Version is set at build time with -ldflags "-X ...batoncli.Version=...".
var Version = "dev"

// New returns the baton app writing results to stdout and diagnostics to
// stderr.
func New(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "baton",
		Usage: "coordination sidecar for GPU inference workers, on etcd",
		Description: "Baton runs one sidecar beside each inference worker. Workers talk to their sidecar over a\n" +
			"Unix socket (next task, done, failed, lock, config); the sidecars coordinate through etcd.\n" +
			"Start everything on one machine with `baton dev`.",
		Version:              Version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Flags:                globalFlags(),
		Commands: []*cli.Command{
			devCommand(),
			sidecarCommand(),
			submitCommand(),
			waitCommand(),
			tasksCommand(),
			queuesCommand(),
			workersCommand(),
			locksCommand(),
			configCommand(),
			auditCommand(),
			authCommand(),
			benchCommand(),
			benchEtcdCommand(),
			versionCommand(),
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err == nil {
				return
			}
			if ec, ok := err.(cli.ExitCoder); ok {
				if msg := ec.Error(); msg != "" {
					fmt.Fprintln(stderr, "baton:", msg)
				}
				return
			}
			fmt.Fprintln(stderr, "baton:", err)
		},
	}
	withGlobalFlags(app.Commands)
	return app
}

// withGlobalFlags gives every command that acts (a leaf) its own copy of
// the global flags, so that they work where the usage texts show them,
// after the command (`baton sidecar --endpoints …`), as well as before it
// (`baton --endpoints … sidecar`); after the command wins. The copies take
// no BATON_* variable: the app's flag reads it.
// Its Before then checks the connection settings.
func withGlobalFlags(cmds []*cli.Command) {
	for _, cmd := range cmds {
		if len(cmd.Subcommands) > 0 {
			withGlobalFlags(cmd.Subcommands)
			continue
		}
		for _, f := range globalFlags() {
			cmd.Flags = append(cmd.Flags, commandCopy(f))
		}
		before := cmd.Before
		cmd.Before = func(c *cli.Context) error {
			if err := inheritGlobalFlags(c); err != nil {
				return err
			}
			if err := checkConnection(c); err != nil {
				return err
			}
			if before != nil {
				return before(c)
			}
			return nil
		}
	}
}

// commandCopy is global flag f as a command's flag: set only on the
// command line.
func commandCopy(f cli.Flag) cli.Flag {
	const category = "global (also accepted before the command; variables: baton --help)"
	switch f := f.(type) {
	case *cli.StringFlag:
		return &cli.StringFlag{Name: f.Name, Value: f.Value, Usage: f.Usage, Category: category}
	case *cli.StringSliceFlag:
		var def *cli.StringSlice
		if f.Value != nil {
			def = cli.NewStringSlice(f.Value.Value()...)
		}
		return &cli.StringSliceFlag{Name: f.Name, Value: def, Usage: f.Usage, Category: category}
	case *cli.Int64Flag:
		return &cli.Int64Flag{Name: f.Name, Value: f.Value, Usage: f.Usage, Category: category}
	}
	panic(fmt.Sprintf("global flag %v of an unexpected type", f.Names()))
}

// inheritGlobalFlags gives the command's copies of the global flags that
// were not set after the command the app's values (set before the
// command, or from a BATON_* variable).
func inheritGlobalFlags(c *cli.Context) error {
	lineage := c.Lineage()
	if len(lineage) < 2 {
		return nil
	}
	up, local := lineage[1], c.LocalFlagNames()
	for _, f := range globalFlags() {
		name := f.Names()[0]
		// Not set anywhere: the copy keeps the same default and, for
		// c.IsSet, stays unset.
		if slices.Contains(local, name) || !up.IsSet(name) {
			continue
		}
		vals := []string{up.String(name)}
		if _, ok := f.(*cli.StringSliceFlag); ok {
			vals = up.StringSlice(name)
		}
		for _, v := range vals {
			if err := c.Set(name, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkConnection validates the etcd connection settings and reads
// --etcd-password-file.
func checkConnection(c *cli.Context) error {
	if err := etcdconn.ValidateNamespace(c.String("namespace")); err != nil {
		return cli.Exit(err.Error(), 2)
	}
	// `baton dev` makes its own etcd and password: a password file left in
	// the environment by an earlier one is not its concern.
	if f := c.String("etcd-password-file"); f != "" && c.Command.Name != "dev" {
		b, err := os.ReadFile(f)
		if err != nil {
			return cli.Exit("etcd-password-file: "+err.Error(), 2)
		}
		if err := c.Set("etcd-password", strings.TrimSpace(string(b))); err != nil {
			return err
		}
		if c.String("etcd-user") == "" {
			if err := c.Set("etcd-user", "root"); err != nil {
				return err
			}
		}
	}
	if err := etcdConfig(c).Validate(); err != nil {
		return cli.Exit(err.Error(), 2)
	}
	return nil
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "endpoints", Value: cli.NewStringSlice("127.0.0.1:2379"), EnvVars: []string{"BATON_ENDPOINTS"}, Usage: "etcd endpoints (host:port, comma separated)"},
		&cli.StringFlag{Name: "namespace", Value: "baton", EnvVars: []string{"BATON_NAMESPACE"}, Usage: "key prefix of this deployment in etcd"},
		&cli.StringFlag{Name: "etcd-user", EnvVars: []string{"BATON_ETCD_USER"}, Usage: "etcd user name"},
		&cli.StringFlag{Name: "etcd-password", EnvVars: []string{"BATON_ETCD_PASSWORD"}, Usage: "etcd password"},
		&cli.StringFlag{Name: "etcd-password-file", EnvVars: []string{"BATON_ETCD_PASSWORD_FILE"}, Usage: "read the etcd password from this file (baton dev writes DATA-DIR/etcd-root.password); the user is root unless --etcd-user says otherwise"},
		&cli.StringFlag{Name: "etcd-cacert", EnvVars: []string{"BATON_ETCD_CACERT"}, Usage: "CA certificate file for etcd TLS"},
		&cli.StringFlag{Name: "etcd-cert", EnvVars: []string{"BATON_ETCD_CERT"}, Usage: "client certificate file for etcd TLS"},
		&cli.StringFlag{Name: "etcd-key", EnvVars: []string{"BATON_ETCD_KEY"}, Usage: "client key file for etcd TLS"},
		&cli.Int64Flag{Name: "etcd-quota-bytes", Value: workqueue.DefaultQuotaBytes, EnvVars: []string{"BATON_ETCD_QUOTA_BYTES"}, Usage: "etcd's --quota-backend-bytes (Status does not report it): submits are refused with the numbers once etcd's database passes 80% of it, so that claims and answers never meet NOSPACE"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"BATON_LOG_FORMAT"}, Usage: "log format: text or json"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"BATON_LOG_LEVEL"}, Usage: "log level: debug, info, warn or error"},
	}
}

func etcdConfig(c *cli.Context) etcdconn.Config {
	var eps []string
	for _, e := range c.StringSlice("endpoints") {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				eps = append(eps, p)
			}
		}
	}
	return etcdconn.Config{
		Endpoints: eps,
		Namespace: c.String("namespace"),
		Username:  c.String("etcd-user"),
		Password:  c.String("etcd-password"),
		CACert:    c.String("etcd-cacert"),
		Cert:      c.String("etcd-cert"),
		Key:       c.String("etcd-key"),
	}
}

func logger(c *cli.Context) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	w := c.App.ErrWriter
	// Lines logged inside a span carry its trace_id and span_id.
	switch c.String("log-format") {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts))), nil
	default:
		return nil, fmt.Errorf("log-format: %q is not text or json", c.String("log-format"))
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "baton", Version)
			return nil
		},
	}
}

// runs makes the in-process runs of the app take turns: urfave/cli writes
// its global HelpFlag on every run (tests run the app from parallel
// goroutines; the race detector reports it).
var runs sync.Mutex

// Main runs the app on args (args[0] is the program's name) with the
// given standard streams and returns the process's exit code: 0, the
// command's own (`baton wait`, bad usage), or 1. The app has printed the
// error by then. cmd/baton exits with it; tests call it with buffers.
// Runs in one process take turns.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	runs.Lock()
	defer runs.Unlock()
	app := New(stdout, stderr)
	if stdin != nil {
		app.Reader = stdin
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.ExitCode() != 0 {
		return ec.ExitCode()
	}
	return 1
}
