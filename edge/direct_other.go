//go:build !unix

package edge

import (
	"net"
	"syscall"
)

// directConn is nil off unix: every PUBACK goes through the client's writer goroutine and
// mochi's public WritePacket (see direct_unix.go for the fast path).
func directConn(net.Conn) syscall.RawConn { return nil }

// directWriter is never made without a raw connection; it writes nothing.
type directWriter struct{}

func newDirectWriter(syscall.RawConn) *directWriter { return &directWriter{} }

func (*directWriter) write([]byte) int { return 0 }

// fdConnectionLimit: no descriptor limit to read here; the max_connections setting bounds
// connections.
func fdConnectionLimit() int { return 1 << 20 }
