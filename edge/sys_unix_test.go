//go:build unix

package edge

import "syscall"

// setFileLimit sets this process's soft and hard RLIMIT_NOFILE to n.
func setFileLimit(n uint64) error {
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n})
}

// smallReceiveBuffer shrinks a dialed socket's receive buffer, so a client that stops reading
// blocks the agent's writes to it sooner.
func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
}
