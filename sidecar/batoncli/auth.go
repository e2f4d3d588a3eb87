package batoncli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/internal/etcdauth"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func authCommand() *cli.Command {
	return &cli.Command{
		Name:  "auth",
		Usage: "etcd users and roles of this deployment",
		Subcommands: []*cli.Command{{
			Name: "grant",
			Usage: "give an etcd user read-write (--read-only: read) on this deployment's --namespace prefix and nothing else, " +
				"creating its role and the user when they do not exist; runs as root (--etcd-password-file); running it again changes nothing",
			ArgsUsage: " ",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "user", Required: true, Usage: "etcd user to create or update, e.g. sidecar-tts"},
				&cli.StringFlag{Name: "password-file", Required: true, Usage: "file holding the user's password"},
				&cli.StringFlag{Name: "role", Usage: "etcd role to create or update (default baton-NAMESPACE, or baton-NAMESPACE-ro with --read-only)"},
				&cli.BoolFlag{Name: "read-only", Usage: "read permission only (dashboards, audits)"},
				&cli.BoolFlag{Name: "enable-auth", Usage: "first turn etcd's authentication on, if it is off, with root's password from --etcd-password-file (a new cluster)"},
			},
			Action: authGrant,
		}},
	}
}

func authGrant(c *cli.Context) error {
	if c.Args().Present() {
		return cli.Exit("auth grant takes no arguments", 2)
	}
	user := c.String("user")
	if user == "" || user == "root" || strings.ContainsAny(user, ": \t\n") {
		return cli.Exit(fmt.Sprintf("user: %q is not a user name to grant (not root, no ':' or spaces)", user), 2)
	}
	b, err := os.ReadFile(c.String("password-file"))
	if err != nil {
		return cli.Exit("password-file: "+err.Error(), 2)
	}
	password := strings.TrimSpace(string(b))
	if password == "" {
		return cli.Exit("password-file: "+c.String("password-file")+" is empty", 2)
	}
	cfg := etcdConfig(c)
	if cfg.Password == "" {
		return cli.Exit("etcd-password-file: auth grant runs as root: give root's password", 2)
	}
	role, perm := c.String("role"), clientv3.PermissionType(clientv3.PermReadWrite)
	if role == "" {
		role = "baton-" + c.String("namespace")
	}
	if c.Bool("read-only") {
		perm = clientv3.PermissionType(clientv3.PermRead)
		if c.String("role") == "" {
			role += "-ro"
		}
	}
	ctx := c.Context
	if c.Bool("enable-auth") {
		anon := cfg
		anon.Username, anon.Password = "", ""
		cli0, err := etcdconn.New(anon)
		if err != nil {
			return err
		}
		st, err := cli0.AuthStatus(ctx)
		if err == nil && !st.Enabled {
			err = etcdauth.EnableAuth(ctx, cli0, cfg.Password)
			if err == nil {
				fmt.Fprintln(c.App.ErrWriter, "etcd authentication turned on (user root)")
			}
		} else {
			err = nil // on already (or not ours to ask): root's client below says
		}
		cli0.Close()
		if err != nil {
			return err
		}
	}
	root, err := etcdconn.New(cfg)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := etcdconn.Ping(ctx, root, cfg.Endpoints, 10*time.Second); err != nil {
		return err
	}
	prefix := etcdConfig(c).Prefix()
	if err := etcdauth.GrantPrefix(ctx, root, role, user, password, prefix, perm); err != nil {
		return err
	}
	what := "read-write"
	if c.Bool("read-only") {
		what = "read"
	}
	fmt.Fprintf(c.App.Writer, "user %s: %s on %s (role %s)\n", user, what, prefix, role)
	return nil
}
