// Package names checks the names Baton puts into etcd keys, socket
// requests and file paths: task ids, queues, batches, lock and config
// document names.
package names

import (
	"fmt"
	"strings"
)

// Check reports what is wrong with s as a name of at most max bytes made
// of ASCII letters, digits and the bytes in extra; nil when it is fine.
func Check(s string, max int, extra string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > max {
		return fmt.Errorf("%d bytes, longer than %d", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		return fmt.Errorf("%q has %q at byte %d; allowed are letters, digits and %q", s, c, i, extra)
	}
	return nil
}
