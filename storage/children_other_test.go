//go:build !unix

package storage

// childMain: the crash and power-cut tests kill child processes with unix signals and run on unix
// only, so on other systems this binary is never a child.
func childMain() (code int, child bool) { return 0, false }
