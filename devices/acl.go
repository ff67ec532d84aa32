package devices

import (
	"net"
	"net/netip"
	"strings"
)

// AnonymousAllowed applies Mosquitto 2's default: clients without credentials are accepted only
// when every listener is reachable from this host alone, unless the operator set allowAnonymous.
//
// A listen address may be "host:port", "[v6]:port", a bare host, a URL such as "tcp://host:port" or
// "ws://host:port/mqtt", or a unix socket ("unix:/path", "unix:///path", or a path starting with '/'
// or '.'). Loopback means a unix socket, "localhost", or an IP in 127.0.0.0/8 or ::1 (also as
// IPv4-mapped IPv6). An empty host (":1883"), 0.0.0.0, ::, any other name, and an empty list are
// not loopback: a name might resolve elsewhere, and no listeners is no reason to open up.
func AnonymousAllowed(listenAddrs []string, allowAnonymous bool) bool {
	if allowAnonymous {
		return true
	}
	if len(listenAddrs) == 0 {
		return false
	}
	for _, addr := range listenAddrs {
		if !isLoopbackListener(addr) {
			return false
		}
	}
	return true
}

func isLoopbackListener(addr string) bool {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return false
	}
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "./") || strings.HasPrefix(addr, "@") {
		return true // unix socket path, or a Linux abstract socket
	}
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		if strings.EqualFold(scheme, "unix") {
			return true
		}
		addr, _, _ = strings.Cut(rest, "/") // drop a websocket path
		if _, userHost, ok := strings.Cut(addr, "@"); ok {
			addr = userHost
		}
	} else if strings.HasPrefix(strings.ToLower(addr), "unix:") {
		return true
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	} else if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		host = addr[1 : len(addr)-1]
	}
	if host == "" {
		return false // ":1883" listens on every interface
	}
	if strings.EqualFold(host, "localhost") || strings.EqualFold(host, "localhost.") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}
