//go:build unix

package kafkaserve

import "syscall"

// cpuTime is the CPU time the process has used, user and system, in nanoseconds: on a machine
// shared with other jobs it moves less than wall time, which includes waiting for a core.
func cpuTime() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
