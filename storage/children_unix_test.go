//go:build unix

package storage

import "os"

// childMain runs this test binary as the child of a crash or power-cut test when the parent's
// environment says so; child reports whether it did.
func childMain() (code int, child bool) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		return crashChild(dir), true // the crash test's child process, killed by its parent
	}
	return removalChildMain()
}
