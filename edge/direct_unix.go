//go:build unix

package edge

import (
	"net"
	"syscall"
)

// The committer's direct PUBACK write (clientAcks.complete) needs a write that never blocks: on
// unix a write(2) on the socket's descriptor, which Go keeps non-blocking. directConn returns the
// raw connection for it, nil where there is none (TLS, WebSocket): those acks go through the
// client's writer goroutine and mochi's WritePacket, as on every other platform.
func directConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// directWriter writes to one connection without waiting for the socket to drain; write returns
// how much it took: 0 on EAGAIN, EINTR or a broken connection (the writer goroutine finds out
// which). It is made once per connection: raw.Write takes a callback, and a closure made per
// ack, with the count it sets, cost two allocations per reading. Its user
// holds the client's write lock, so one write runs at a time.
type directWriter struct {
	raw syscall.RawConn
	b   []byte
	n   int
	fn  func(fd uintptr) bool // writeFD, bound once
}

func newDirectWriter(raw syscall.RawConn) *directWriter {
	w := &directWriter{raw: raw}
	w.fn = w.writeFD
	return w
}

func (w *directWriter) writeFD(fd uintptr) bool {
	var err error
	if w.n, err = syscall.Write(int(fd), w.b); err != nil {
		w.n = 0
	}
	return true // never wait for the socket to drain here
}

func (w *directWriter) write(b []byte) int {
	w.b, w.n = b, 0
	err := w.raw.Write(w.fn)
	w.b = nil
	if err != nil {
		return 0
	}
	return w.n
}

// fdConnectionLimit is the most MQTT connections the file descriptor limit leaves room for:
// the soft RLIMIT_NOFILE (which the Go runtime raises to the hard limit at start) less a reserve
// for the log's segment files, the registry, HTTP and the forwarder's connections.
func fdConnectionLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	lim := int(rl.Cur)
	return max(lim-max(64, lim/8), 1)
}
