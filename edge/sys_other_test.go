//go:build !unix

package edge

import (
	"errors"
	"syscall"
)

// setFileLimit: descriptor limits are a unix notion; the tests that lower them need unix.
func setFileLimit(uint64) error { return errors.New("no RLIMIT_NOFILE on this system") }

// smallReceiveBuffer leaves the socket's buffer as it is: the client that stops reading then
// has more to fill before the agent's writes block.
func smallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
