//go:build linux

// Package testfs mounts small real file systems for tests of what a disk does to the code: a
// size-limited tmpfs that fills up (ENOSPC) and a read-only view of a directory. Mounting needs
// root (CAP_SYS_ADMIN); without it the test skips on a laptop and fails under CI=true, as
// internal/testprog does for missing programs.
package testfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory and unmounts it when the test
// ends (after the cleanups the test registers later, which run first).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount("tmpfs", dir, "tmpfs", 0, "size="+itoa(size)+",mode=0755"); err != nil {
		testprog.Missing(t, "mount a %d-byte tmpfs (needs root): %v", size, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// Fill writes a file into dir until the file system refuses with ENOSPC and returns its path;
// removing it gives the space back.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create filler: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Small writes may still fit in the last partial page.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return path
}

// ReadOnly bind-mounts src read-only on a new temporary directory and returns it. Root ignores
// file permission bits, so only a read-only mount really refuses writes to a test running as root.
func ReadOnly(t testing.TB, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount(src, dir, "", syscall.MS_BIND, ""); err != nil {
		testprog.Missing(t, "bind-mount %s (needs root): %v", src, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	if err := mount("", dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
	return dir
}

func unmount(t testing.TB, dir string) {
	if err := syscall.Unmount(dir, 0); err != nil {
		// Busy: something in the test still holds a file; detach so the directory can go.
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	return syscall.Mount(src, dst, fstype, flags, data)
}
