// Package testutil holds helpers for tests that use the real kernel: privilege
// checks, throwaway cgroups and bpffs pins, and in-process certificates.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root and BPF on a developer machine,
// but fails it in CI (CI=true), where a skipped privileged test would hide a
// regression.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) to load BPF programs and create cgroups"
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true: privileged test cannot run: %s", why)
	}
	tb.Skip(why)
}
