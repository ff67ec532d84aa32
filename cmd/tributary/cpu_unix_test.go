//go:build unix

package main

import (
	"syscall"
	"time"
)

// selfCPU is the CPU time this process used so far, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
