//go:build !linux

package testfs

import (
	"testing"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// Tmpfs needs Linux.
func Tmpfs(t testing.TB, size int64) string {
	testprog.Missing(t, "a size-limited tmpfs needs Linux")
	return ""
}

// Fill needs Linux.
func Fill(t testing.TB, dir string) string {
	testprog.Missing(t, "filling a tmpfs needs Linux")
	return ""
}

// ReadOnly needs Linux.
func ReadOnly(t testing.TB, src string) string {
	testprog.Missing(t, "a read-only bind mount needs Linux")
	return ""
}
