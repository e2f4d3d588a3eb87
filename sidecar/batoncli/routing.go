package batoncli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/batonhq/baton/sidecar/workqueue"
)

// The routing flags of `baton submit`: --affinity-field and --require.

// parseRequire parses the --require KEY=VALUE pairs into the labels every
// task of the file requires, with the label rules of the work queue. It
// names the bad pair: "require[1]: ...". A key given twice with different
// values is an error; nil when no pair is given.
func parseRequire(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	at := make(map[string]int, len(pairs))
	for i, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("require[%d]: %q is not KEY=VALUE", i, p)
		}
		if err := workqueue.ValidateLabels(map[string]string{k: v}); err != nil {
			return nil, fmt.Errorf("require[%d]: %w", i, err)
		}
		if j, dup := at[k]; dup && out[k] != v {
			return nil, fmt.Errorf("require[%d]: %s=%s conflicts with require[%d] %s=%s", i, k, v, j, k, out[k])
		}
		out[k], at[k] = v, i
	}
	if err := workqueue.ValidateLabels(out); err != nil {
		return nil, fmt.Errorf("require: %w", err)
	}
	return out, nil
}

// affinityOf returns the affinity key a JSONL line names in field. A line
// without the field, or with null in it, has no affinity (""): a file may
// mix lines with and without a speaker prompt. Any other value than a JSON
// string is an error, since a number or an object is most likely the wrong
// field.
func affinityOf(payload json.RawMessage, field string) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil {
		return "", fmt.Errorf("affinity-field %q: %w", field, err)
	}
	raw, ok := obj[field]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("affinity-field %q: is %s, not a string", field, jsonKind(raw))
	}
	return s, nil
}

// jsonKind names the type of a JSON value for error messages.
func jsonKind(raw json.RawMessage) string {
	switch s := strings.TrimSpace(string(raw)); {
	case s == "true" || s == "false":
		return "a boolean"
	case strings.HasPrefix(s, "{"):
		return "an object"
	case strings.HasPrefix(s, "["):
		return "an array"
	default:
		return "a number"
	}
}

func requireNote(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	return ", require " + labels(m)
}

func affinityNote(field string, withAffinity int) string {
	if field == "" {
		return ""
	}
	return fmt.Sprintf(", %d with affinity (%s)", withAffinity, field)
}
