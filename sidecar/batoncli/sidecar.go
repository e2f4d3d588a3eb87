package batoncli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/ui"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
)

// Default admin addresses: `baton dev` uses the next port, so that a dev
// sidecar and a `baton sidecar` on one laptop do not collide.
const (
	DefaultAdminAddr    = "127.0.0.1:9464"
	DefaultDevAdminAddr = "127.0.0.1:9465"
)

// sidecarFlags are shared by `baton sidecar` and `baton dev`.
func sidecarFlags(defaultSocket, defaultAdmin string, defaultUI bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "socket", Value: defaultSocket, EnvVars: []string{"BATON_SOCKET"}, Usage: "Unix socket to serve workers on"},
		&cli.StringSliceFlag{Name: "queue", EnvVars: []string{"BATON_QUEUE"}, Usage: "queue this sidecar serves (repeatable, at most 16; default \"default\"): workers' Next takes only from these, and from all of them when it names none"},
		&cli.StringSliceFlag{Name: "submit-queue", EnvVars: []string{"BATON_SUBMIT_QUEUE"}, Usage: "queue workers may Submit to through this sidecar (repeatable; default: its --queue values); '*' allows any queue"},
		&cli.DurationFlag{Name: "ttl", Value: sidecar.DefaultTTL, EnvVars: []string{"BATON_TTL"}, Usage: "etcd lease TTL: how soon claims of a dead sidecar return to the queue"},
		&cli.StringFlag{Name: "worker-id", EnvVars: []string{"BATON_WORKER_ID"}, Usage: "name of the worker this sidecar serves, in claims, locks, baton workers list and spans (default hostname-pid)"},
		&cli.DurationFlag{Name: "grace", Value: sidecar.DefaultGrace, EnvVars: []string{"BATON_GRACE"}, Usage: "on shutdown, how long to wait for claimed tasks to finish before giving them back"},
		&cli.StringFlag{Name: "socket-group", EnvVars: []string{"BATON_SOCKET_GROUP"}, Usage: "group of the socket file (name or number); default the sidecar's own"},
		&cli.StringSliceFlag{Name: "allow-uid", EnvVars: []string{"BATON_ALLOW_UID"}, Usage: "uid allowed to use the socket, checked on every connection (repeatable; default: the sidecar's own uid and the socket's group)"},
		&cli.StringSliceFlag{Name: "allow-gid", EnvVars: []string{"BATON_ALLOW_GID"}, Usage: "primary gid allowed to use the socket (repeatable)"},
		&cli.IntFlag{Name: "max-connections", Value: sidecar.DefaultMaxConnections, EnvVars: []string{"BATON_MAX_CONNECTIONS"}, Usage: "socket connections open at once; more are closed at accept (baton_socket_connections_refused_total)"},
		&cli.DurationFlag{Name: "socket-read-timeout", Value: server.DefaultReadTimeout, EnvVars: []string{"BATON_SOCKET_READ_TIMEOUT"}, Usage: "time a caller has to send one request, body included"},
		&cli.DurationFlag{Name: "socket-idle-timeout", Value: server.DefaultIdleTimeout, EnvVars: []string{"BATON_SOCKET_IDLE_TIMEOUT"}, Usage: "a socket connection without calls in flight is closed after this long"},
		&cli.StringFlag{Name: "socket-mode", Value: "0660", EnvVars: []string{"BATON_SOCKET_MODE"}, Usage: "file mode of the socket (octal)"},
		&cli.IntFlag{Name: "payload-limit", Value: 64 << 10, EnvVars: []string{"BATON_PAYLOAD_LIMIT"}, Usage: "largest task payload in bytes (a result may have 4 KiB: it references the output by path or URI)"},
		&cli.StringSliceFlag{Name: "label", EnvVars: []string{"BATON_LABEL"}, Usage: "KEY=VALUE (repeatable), e.g. model=indextts2: shown by baton workers list; a task submitted with --require goes only to sidecars with all its labels"},
		&cli.DurationFlag{Name: "retention", Value: 24 * 3600e9, EnvVars: []string{"BATON_RETENTION"}, Usage: "how long finished tasks are kept"},
		&cli.StringFlag{Name: "admin-token-file", EnvVars: []string{"BATON_ADMIN_TOKEN_FILE"}, Usage: "require the token in this file as a bearer token on the admin server's /metrics and on the web page (--ui; a browser logs in with it once); /healthz and /readyz stay open for probes"},
		&cli.StringFlag{Name: "admin-cert", EnvVars: []string{"BATON_ADMIN_CERT"}, Usage: "serve the admin server over HTTPS with this certificate file (PEM; re-read when it changes, so a rotated certificate needs no restart); needs --admin-key"},
		&cli.StringFlag{Name: "admin-key", EnvVars: []string{"BATON_ADMIN_KEY"}, Usage: "private key file of --admin-cert"},
		&cli.StringFlag{Name: "admin-client-cacert", EnvVars: []string{"BATON_ADMIN_CLIENT_CACERT"}, Usage: "with --admin-cert: /metrics requires a client certificate signed by a CA in this file (re-read when it changes); /healthz and /readyz stay open for probes"},
		&cli.StringFlag{Name: "admin-addr", Value: defaultAdmin, EnvVars: []string{"BATON_ADMIN_ADDR"},
			Usage: "host:port of the admin HTTP server: /metrics (Prometheus), /healthz, /readyz; empty turns it off"},
		&cli.BoolFlag{Name: "ui", Value: defaultUI, EnvVars: []string{"BATON_UI"}, Usage: "serve the operator's web page on the admin server at /ui/ (batches, tasks, queues, workers, locks, config, audit; live updates); behind --admin-token-file when set"},
		&cli.StringFlag{Name: "ui-actions", Value: ui.ActionsAuto, EnvVars: []string{"BATON_UI_ACTIONS"}, Usage: "whether the web page may retry, cancel, pause and resume: auto (only when --admin-addr is a loopback address), on or off"},
	}
}

func sidecarConfig(c *cli.Context) (sidecar.Config, error) {
	log, err := logger(c)
	if err != nil {
		return sidecar.Config{}, err
	}
	mode, err := strconv.ParseUint(c.String("socket-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return sidecar.Config{}, fmt.Errorf("socket-mode: %q is not an octal file mode", c.String("socket-mode"))
	}
	switch {
	case mode&0o600 != 0o600:
		return sidecar.Config{}, fmt.Errorf("socket-mode: %04o does not let the sidecar's own user read and write the socket", mode)
	case mode&0o007 != 0:
		return sidecar.Config{}, fmt.Errorf("socket-mode: %04o lets every local user use the socket (claim, answer and submit tasks); give the workers a group instead (0660)", mode)
	}
	token := ""
	if f := c.String("admin-token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return sidecar.Config{}, fmt.Errorf("admin-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return sidecar.Config{}, fmt.Errorf("admin-token-file: %s is empty", f)
		}
	}
	uids, err := parseIDs("allow-uid", c.StringSlice("allow-uid"))
	if err != nil {
		return sidecar.Config{}, err
	}
	gids, err := parseIDs("allow-gid", c.StringSlice("allow-gid"))
	if err != nil {
		return sidecar.Config{}, err
	}
	labels, err := registry.ParseLabels(c.StringSlice("label"))
	if err != nil {
		return sidecar.Config{}, err
	}
	queues := c.StringSlice("queue")
	if len(queues) == 0 {
		queues = []string{"default"}
	}
	workerID := c.String("worker-id")
	if workerID == "" {
		workerID = sidecar.DefaultWorkerID() // named here too: it is the traces' service.instance.id
	}
	cfg := sidecar.Config{
		Etcd:           etcdConfig(c),
		Socket:         c.String("socket"),
		SocketMode:     os.FileMode(mode),
		Queues:         queues,
		SubmitQueues:   c.StringSlice("submit-queue"),
		TTL:            c.Duration("ttl"),
		WorkerID:       workerID,
		Labels:         labels,
		Version:        Version,
		Grace:          c.Duration("grace"),
		MaxConnections: c.Int("max-connections"),
		SocketGroup:    c.String("socket-group"),
		AllowUIDs:      uids,
		AllowGIDs:      gids,
		SocketTimeouts: server.Timeouts{Read: c.Duration("socket-read-timeout"), Idle: c.Duration("socket-idle-timeout")},
		Queue:          workqueue.Config{PayloadLimit: c.Int("payload-limit"), Retention: c.Duration("retention"), Logger: log},
		Logger:         log,
		AdminAddr:      c.String("admin-addr"),
		AdminToken:     token,
		AdminCert:      c.String("admin-cert"),
		AdminKey:       c.String("admin-key"),
		AdminClientCA:  c.String("admin-client-cacert"),
		EtcdQuotaBytes: c.Int64("etcd-quota-bytes"),
		UI:             c.Bool("ui"),
		UIActions:      c.String("ui-actions"),
	}
	return cfg, nil
}

// sidecarTracing sets cfg's tracer provider from the OTEL_* variables; call
// the returned function after the sidecar stopped, to flush the spans.
func sidecarTracing(c *cli.Context, cfg *sidecar.Config) (func(), error) {
	tp, flush, err := tracerProvider(c, cfg.Logger, telemetry.TraceConfig{ServiceName: "baton-sidecar", InstanceID: cfg.WorkerID})
	if err != nil {
		return nil, err
	}
	cfg.TracerProvider = tp
	return flush, nil
}

func sidecarCommand() *cli.Command {
	return &cli.Command{
		Name:      "sidecar",
		Usage:     "serve workers on a Unix socket, coordinating through etcd",
		UsageText: "baton sidecar --endpoints HOST:PORT --socket PATH --queue Q [--queue Q2] [--submit-queue Q3] [--ttl 10s] [--admin-addr 127.0.0.1:9464]",
		Description: "Traces go to an OpenTelemetry collector when the standard OTEL_* variables say so\n" +
			"(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL grpc or http/protobuf, OTEL_TRACES_SAMPLER, ...);\n" +
			"without them nothing is traced. Metrics and health: --admin-addr (see docs/observability.md); --ui adds\n" +
			"the operator's web page at /ui/ there (docs/ui.md).\n" +
			"Workers on the socket take tasks only from the --queue values and submit only to the --submit-queue\n" +
			"values (default: the --queue values); any other queue is refused with PERMISSION_DENIED (docs/security.md).",
		Flags: sidecarFlags("/run/baton/baton.sock", DefaultAdminAddr, false),
		Action: func(c *cli.Context) error {
			cfg, err := sidecarConfig(c)
			if err != nil {
				return err
			}
			flush, err := sidecarTracing(c, &cfg)
			if err != nil {
				return err
			}
			defer flush()
			sc, err := sidecar.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(c.Context)
			defer stop()
			return sc.Run(ctx)
		},
	}
}

// parseIDs parses uids or gids given to flag (comma separated or
// repeated).
func parseIDs(flag string, vals []string) ([]uint32, error) {
	var out []uint32
	for _, v := range vals {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a number", flag, f)
			}
			out = append(out, uint32(n))
		}
	}
	return out, nil
}
