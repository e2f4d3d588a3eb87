package batoncli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
)

func tasksCommand() *cli.Command {
	return &cli.Command{
		Name:  "tasks",
		Usage: "inspect, cancel and retry tasks",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list tasks, filtered by queue, state or batch",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "queue", Aliases: []string{"q"}, Usage: "only tasks of this queue"},
					&cli.StringFlag{Name: "state", Usage: "only tasks in this state: PENDING, CLAIMED, FAILED, DONE, DEAD or CANCELLED"},
					&cli.StringFlag{Name: "batch", Usage: "only tasks of this batch (reads just the batch's tasks)"},
					&cli.IntFlag{Name: "limit", Value: 1000, Usage: "most tasks to list"},
					outputFlag(),
				},
				Action: tasksList,
			},
			{
				Name:      "get",
				Usage:     "show one task: payload, attempts, routing (affinity, require), last error, holder, result",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{outputFlag()},
				Action:    tasksGet,
			},
			{
				Name:      "cancel",
				Usage:     "cancel a task; a claimed task's worker is asked to stop (Attach push and Heartbeat)",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{outputFlag()},
				Action:    tasksCancel,
			},
			{
				Name:      "retry",
				Usage:     "put a DEAD or CANCELLED task back into its queue with fresh attempts",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{outputFlag()},
				Action:    tasksRetry,
			},
		},
	}
}

// oneID returns the single ID argument.
func oneID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", cli.Exit(fmt.Sprintf("tasks %s: give one task ID", c.Command.Name), 2)
	}
	id := c.Args().First()
	if err := workqueue.ValidateID(id); err != nil {
		return "", cli.Exit(fmt.Sprintf("ID: %v", err), 2)
	}
	return id, nil
}

// opError turns the queue's refusals into exit codes with clear messages.
func opError(err error, id string) error {
	var se *workqueue.StateError
	var inv *workqueue.InvalidError
	switch {
	case errors.Is(err, workqueue.ErrNotFound):
		return cli.Exit(fmt.Sprintf("task %s not found (never submitted, or removed after its retention period)", id), 1)
	case errors.As(err, &se):
		return cli.Exit(se.Error(), 1)
	case errors.As(err, &inv):
		return cli.Exit(inv.Error(), 2)
	}
	return err
}

func tasksList(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	f := workqueue.ListFilter{Queue: c.String("queue"), State: workqueue.State(strings.ToUpper(c.String("state"))), Batch: c.String("batch"), Limit: c.Int("limit")}
	switch f.State {
	case "", workqueue.StatePending, workqueue.StateClaimed, workqueue.StateFailed, workqueue.StateDone, workqueue.StateDead, workqueue.StateCancelled:
	default:
		return cli.Exit(fmt.Sprintf("state: %q is not PENDING, CLAIMED, FAILED, DONE, DEAD or CANCELLED", c.String("state")), 2)
	}
	if f.Queue != "" {
		if err := workqueue.ValidateQueue(f.Queue); err != nil {
			return cli.Exit(fmt.Sprintf("queue: %v", err), 2)
		}
	}
	if f.Batch != "" {
		if err := workqueue.ValidateBatch(f.Batch); err != nil {
			return cli.Exit(fmt.Sprintf("batch: %v", err), 2)
		}
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	tasks, more, err := store.List(c.Context, f)
	if err != nil {
		return err
	}
	if more {
		fmt.Fprintf(c.App.ErrWriter, "showing the first %d tasks; use --limit, --queue, --state or --batch to see others\n", len(tasks))
	}
	if asJSON {
		if tasks == nil {
			tasks = []workqueue.TaskInfo{}
		}
		return writeJSON(c.App.Writer, tasks)
	}
	now := time.Now()
	rows := make([][]any, 0, len(tasks))
	for _, t := range tasks {
		st := t.Status
		rows = append(rows, []any{t.ID, st.Queue, st.State, fmt.Sprintf("%d/%d", st.Attempt, st.MaxAttempts), orDash(st.Batch), orDash(st.Holder), age(now, st.UpdatedMS)})
	}
	return table(c.App.Writer, "ID\tQUEUE\tSTATE\tATTEMPTS\tBATCH\tHOLDER\tSINCE", rows)
}

func tasksGet(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	id, err := oneID(c)
	if err != nil {
		return err
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	t, err := store.Get(c.Context, id)
	if err != nil {
		return opError(err, id)
	}
	if asJSON {
		return writeJSON(c.App.Writer, t)
	}
	st := t.Status
	w := c.App.Writer
	fmt.Fprintf(w, "id:        %s\n", t.ID)
	fmt.Fprintf(w, "queue:     %s\n", st.Queue)
	state := string(st.State)
	if t.Cancelling {
		state += " (cancel requested)"
	}
	fmt.Fprintf(w, "state:     %s\n", state)
	fmt.Fprintf(w, "attempts:  %d of %d\n", st.Attempt, st.MaxAttempts)
	fmt.Fprintf(w, "priority:  %d\n", st.Priority)
	if st.Batch != "" {
		fmt.Fprintf(w, "batch:     %s\n", st.Batch)
	}
	if st.Affinity != "" {
		fmt.Fprintf(w, "affinity:  %s\n", safe(st.Affinity))
	}
	if len(st.Require) > 0 {
		fmt.Fprintf(w, "require:   %s\n", safe(labels(st.Require)))
	}
	if t.CreatedMS != 0 {
		fmt.Fprintf(w, "created:   %s\n", time.UnixMilli(t.CreatedMS).UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "updated:   %s\n", time.UnixMilli(st.UpdatedMS).UTC().Format(time.RFC3339Nano))
	if st.State == workqueue.StateClaimed {
		fmt.Fprintf(w, "holder:    %s (session %s, lease %x, token %d)\n", safe(st.Holder), safe(orDash(st.Session)), st.Lease, t.Token)
		fmt.Fprintf(w, "deadline:  %s\n", time.UnixMilli(st.DeadlineMS).UTC().Format(time.RFC3339Nano))
	}
	if t.LastError != nil {
		perm := ""
		if t.LastError.Permanent {
			perm = " (permanent)"
		}
		fmt.Fprintf(w, "error:     attempt %d%s: %s\n", t.LastError.Attempt, perm, safe(t.LastError.Error))
	}
	fmt.Fprintf(w, "payload:   %s\n", safe(string(t.Payload)))
	if t.Result != nil {
		fmt.Fprintf(w, "result:    %s\n", safe(string(t.Result)))
	}
	return nil
}

func tasksCancel(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	id, err := oneID(c)
	if err != nil {
		return err
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	res, err := store.Cancel(c.Context, id)
	if err != nil {
		return opError(err, id)
	}
	if asJSON {
		return writeJSON(c.App.Writer, map[string]any{"id": id, "state": res.State, "cancel_requested": res.Requested})
	}
	if res.Requested {
		fmt.Fprintf(c.App.Writer, "task %s is claimed; its worker was asked to stop (it ends CANCELLED when the worker gives it up)\n", id)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "task %s cancelled\n", id)
	return nil
}

func tasksRetry(c *cli.Context) error {
	asJSON, err := jsonOutput(c)
	if err != nil {
		return err
	}
	id, err := oneID(c)
	if err != nil {
		return err
	}
	etcd, store, err := connect(c)
	if err != nil {
		return err
	}
	defer etcd.Close()
	changed, err := store.Retry(c.Context, id)
	if err != nil {
		return opError(err, id)
	}
	if asJSON {
		return writeJSON(c.App.Writer, map[string]any{"id": id, "state": workqueue.StatePending, "changed": changed})
	}
	if changed {
		fmt.Fprintf(c.App.Writer, "task %s is PENDING again with fresh attempts\n", id)
	} else {
		fmt.Fprintf(c.App.Writer, "task %s is PENDING already\n", id)
	}
	return nil
}
