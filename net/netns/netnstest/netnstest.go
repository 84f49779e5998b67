// Package netnstest is what pilab's privileged tests share: who may make throwaway namespaces, links and
// containers (root; in CI a missing prerequisite fails the test, it never skips), and what to call them (a
// fresh lab prefix, so parallel tests and other labs never share a name).
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// Missing stops a test whose prerequisite (why) is missing: it fails in CI (CI=true), where every
// privileged test must run, and skips elsewhere.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing in CI: %s", why)
	}
	t.Skip(why)
}

// RequireRoot stops the test (see Missing) unless it runs as root; what says what root is needed for.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: "+what)
	}
}

// Lab returns a fresh lab prefix, "t" + 5 hex digits: 6 characters, the longest a lab name may be, so that
// link names built from it stay within the kernel's 15.
func Lab() string {
	b := make([]byte, 3)
	rand.Read(b)
	return ("t" + hex.EncodeToString(b))[:6]
}
