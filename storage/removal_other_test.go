//go:build unix && !linux

package storage

// removalChildMain: the power-cut test of retention needs Linux's FUSE, so elsewhere this binary
// is never its child.
func removalChildMain() (code int, child bool) { return 0, false }
