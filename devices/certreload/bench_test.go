package certreload_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/internal/testpki"
)

// BenchmarkHandshake compares a full TLS 1.3 handshake (over net.Pipe) served by a reloader
// with one served from a certificate loaded once, in the same run: the reloader's look at the
// clock on each handshake and its stats once a second should not show.
func BenchmarkHandshake(b *testing.B) {
	ca := testpki.New(b, "site")
	certFile, keyFile := ca.ServerCert(b, "gw")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		b.Fatal(err)
	}
	servers := map[string]*tls.Config{
		"static":   {Certificates: []tls.Certificate{cert}},
		"reloader": r.ServerConfig(nil),
	}
	client := &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}
	for _, name := range []string{"static", "reloader"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				cc, sc := net.Pipe()
				errc := make(chan error, 1)
				go func() { errc <- tls.Server(sc, servers[name]).Handshake() }()
				if err := tls.Client(cc, client).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				cc.Close()
				sc.Close()
			}
		})
	}
}
