package batoncli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// outputFlag is -o/--output on every command that prints results.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", EnvVars: []string{"BATON_OUTPUT"}, Usage: "table (for people) or json (for scripts)"}
}

// jsonOutput reports whether -o json was given; it refuses other values.
func jsonOutput(c *cli.Context) (bool, error) {
	switch o := c.String("output"); o {
	case "table", "":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, cli.Exit(fmt.Sprintf("output: %q is not table or json", o), 2)
	}
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes tab-separated rows aligned in columns.
func table(w io.Writer, header string, rows [][]any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		for i, v := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, v)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// age formats the time since Unix ms t, or "-" for 0.
func age(now time.Time, t int64) string {
	if t == 0 {
		return "-"
	}
	d := now.Sub(time.UnixMilli(t))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
