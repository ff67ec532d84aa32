package fsutil

import (
	"os"
	"syscall"
)

// Fdatasync flushes file data and the metadata needed to read it back (the size), but not times.
// On Linux this is cheaper than fsync and is what group commit pays once per batch.
func Fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
