package configdoc

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzDocumentNames: a document name is accepted only when its keys cut
// back to it (Names lists config/ by cutting the prefix) and its history
// keys lie under its own history prefix and no other accepted name's
// (the history of "a" must not hold versions of "a/b"); the revision in a
// history key reads back; a refusal says why.
func FuzzDocumentNames(f *testing.F) {
	f.Add("global", "global.v2", int64(42))
	f.Add("a", "a/b", int64(1))
	f.Add("..", ".", int64(0))
	f.Add("", "\x1b[2J", int64(-1))
	f.Fuzz(func(t *testing.T, name, other string, rev int64) {
		if err := ValidateName(name); err != nil {
			if err.Error() == "" {
				t.Fatalf("%q refused with an empty error", name)
			}
			return
		}
		if len(name) > MaxNameLen || strings.ContainsAny(name, "/ ") {
			t.Fatalf("document name %q accepted", name)
		}
		for _, k := range []struct{ prefix, key string }{{prefixConfig, configKey(name)}, {prefixSchema, schemaKey(name)}} {
			if rest, ok := strings.CutPrefix(k.key, k.prefix); !ok || rest != name {
				t.Fatalf("key %q does not cut back to %q", k.key, name)
			}
		}
		if rev >= 0 {
			h := historyKey(name, rev)
			digits, ok := strings.CutPrefix(h, historyPrefix(name))
			if got, err := strconv.ParseInt(digits, 10, 64); !ok || err != nil || got != rev || len(digits) != 19 {
				t.Fatalf("history key %q does not read back revision %d", h, rev)
			}
		}
		if ValidateName(other) == nil && other != name && strings.HasPrefix(historyKey(other, 1), historyPrefix(name)) {
			t.Fatalf("history of %q lies under the prefix of %q", other, name)
		}
	})
}
