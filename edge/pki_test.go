package edge

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/tributary-iot/tributary/internal/testpki"
)

// testCA adapts the shared test PKI to this package's tests.
type testCA struct {
	*testpki.CA
	pool *x509.CertPool
	file string
}

func newTestCA(t testing.TB, name string) *testCA {
	ca := testpki.New(t, name)
	return &testCA{CA: ca, pool: ca.Pool, file: ca.File}
}

func (ca *testCA) serverCert(t testing.TB, name string) (certFile, keyFile string) {
	return ca.ServerCert(t, name)
}

func (ca *testCA) clientCert(t testing.TB, cn string) tls.Certificate { return ca.ClientCert(t, cn) }
