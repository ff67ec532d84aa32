package main

import (
	"os"
	"testing"
)

// writeFile writes s to p, readable by its owner only, or fails the test.
func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
