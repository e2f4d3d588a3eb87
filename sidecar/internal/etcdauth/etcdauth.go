// Package etcdauth sets up etcd's authentication for a deployment, each
// step idempotent: the root user and authentication on (`baton dev`'s
// embedded etcd with a root password), and a user confined to one
// namespace's key prefix (`baton auth grant`).
package etcdauth

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EnableAuth creates etcd's root user (with password) and role and turns
// authentication on. cli must be connected without credentials while
// authentication is off. Every step is idempotent: a root user that exists
// gets password.
func EnableAuth(ctx context.Context, cli *clientv3.Client, password string) error {
	if _, err := cli.RoleAdd(ctx, "root"); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := cli.UserAdd(ctx, "root", password); errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		if _, err := cli.UserChangePassword(ctx, "root", password); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

// GrantPrefix gives user, with password, the permission perm on prefix and
// on nothing else, through role: it creates the role and the user when they
// do not exist, sets the password of a user that does, and grants the role.
// cli must be root's. Running it again changes nothing.
func GrantPrefix(ctx context.Context, cli *clientv3.Client, role, user, password, prefix string, perm clientv3.PermissionType) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("role %s: %w", role, err)
	}
	if _, err := cli.RoleGrantPermission(ctx, role, prefix, clientv3.GetPrefixRangeEnd(prefix), perm); err != nil {
		return fmt.Errorf("role %s: %w", role, err)
	}
	if _, err := cli.UserAdd(ctx, user, password); errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		if _, err := cli.UserChangePassword(ctx, user, password); err != nil {
			return fmt.Errorf("user %s: %w", user, err)
		}
	} else if err != nil {
		return fmt.Errorf("user %s: %w", user, err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("user %s: %w", user, err)
	}
	return nil
}
