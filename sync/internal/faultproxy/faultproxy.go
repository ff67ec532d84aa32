// Package faultproxy is a TCP proxy for tests that breaks the link between an edge and central
// the ways real links break: dropped and reset connections, stalls that keep sockets open but
// move no bytes, refused connections, and a throttled line (e.g. 64 kbit/s).
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards every accepted connection to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[*pair]struct{}
	stalled bool
	refuse  bool
	up, dn  *pacer
	wg      sync.WaitGroup
	closed  bool
}

type pair struct{ client, server net.Conn }

// Start listens on 127.0.0.1 and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}, up: &pacer{}, dn: &pacer{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.DropAll()
	p.wg.Wait()
	return err
}

// DropAll closes every open connection normally (FIN), like a NAT or proxy timing out.
func (p *Proxy) DropAll() { p.closeAll(false) }

// ResetAll aborts every open connection with a TCP RST.
func (p *Proxy) ResetAll() { p.closeAll(true) }

func (p *Proxy) closeAll(reset bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		for _, nc := range []net.Conn{c.client, c.server} {
			if tc, ok := nc.(*net.TCPConn); ok && reset {
				tc.SetLinger(0)
			}
			nc.Close()
		}
		delete(p.conns, c)
	}
}

// Stall stops (true) or resumes (false) moving bytes on every connection; sockets stay open.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	p.stalled = on
	p.mu.Unlock()
}

// Refuse makes new connections close at once after accept (true), or serves them again.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Throttle caps each direction of the link, all connections together, at bytesPerSec; 0 lifts it.
func (p *Proxy) Throttle(bytesPerSec int64) {
	p.up.set(bytesPerSec)
	p.dn.set(bytesPerSec)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{c, s}
		p.mu.Lock()
		p.conns[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pr, s, c, p.up)
		go p.pipe(pr, c, s, p.dn)
	}
}

func (p *Proxy) pipe(pr *pair, dst, src net.Conn, pace *pacer) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pr)
		p.mu.Unlock()
		pr.client.Close()
		pr.server.Close()
	}()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf[:pace.chunk(len(buf))])
		if n > 0 {
			for p.isStalled() {
				time.Sleep(5 * time.Millisecond)
				if p.gone(pr) {
					return
				}
			}
			pace.wait(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					continue
				}
			}
			return
		}
	}
}

func (p *Proxy) isStalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

func (p *Proxy) gone(pr *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.conns[pr]
	return !ok
}

// pacer spaces writes so a direction averages at most rate bytes per second.
type pacer struct {
	mu   sync.Mutex
	rate int64
	next time.Time
}

func (pc *pacer) set(rate int64) {
	pc.mu.Lock()
	pc.rate, pc.next = rate, time.Now()
	pc.mu.Unlock()
}

// chunk keeps reads small on a slow line, so one write does not hog it for seconds.
func (pc *pacer) chunk(n int) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.rate > 0 {
		return int(min(int64(n), max(pc.rate/20, 64)))
	}
	return n
}

func (pc *pacer) wait(n int) {
	pc.mu.Lock()
	if pc.rate <= 0 {
		pc.mu.Unlock()
		return
	}
	now := time.Now()
	if pc.next.Before(now) {
		pc.next = now
	}
	// The rate is read under the lock: Throttle changes it while pipes wait.
	d := time.Duration(float64(n) / float64(pc.rate) * float64(time.Second))
	at := pc.next
	pc.next = pc.next.Add(d)
	pc.mu.Unlock()
	time.Sleep(time.Until(at.Add(d)))
}
