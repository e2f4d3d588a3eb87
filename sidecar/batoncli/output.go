package batoncli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

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

// safe escapes the control characters of s (ESC, CR, backspace, C1 and
// the like, and tabs and newlines, which would break a table's layout) as
// \uXXXX, so that text from workers and submitters (names, errors) cannot
// drive the operator's terminal.
func safe(s string) string {
	clean := true
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// table writes tab-separated rows aligned in columns; every cell is safe.
func table(w io.Writer, header string, rows [][]any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header) // ours: its tabs are the columns
	for _, r := range rows {
		for i, v := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, safe(fmt.Sprint(v)))
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
