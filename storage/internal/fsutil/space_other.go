//go:build !linux

package fsutil

// FreeBytes cannot tell free space on this platform; callers then just try.
func FreeBytes(path string) (free int64, ok bool) { return 0, false }
