//go:build unix

// Package testcpu reads the CPU time the test process has used, for benchmarks that report
// CPU per record: on a machine shared with other jobs it moves less than wall time, which
// includes waiting for a core.
package testcpu

import (
	"syscall"
	"time"
)

// Self is the CPU time this process used so far, user and system; 0 when it cannot be read.
func Self() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
