package fsutil

import "syscall"

// FreeBytes is the space an unprivileged writer may still use on the file system holding path;
// ok is false where it cannot be told.
func FreeBytes(path string) (free int64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
