package edgenode

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/edge/status"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
)

// validateHTTPTLS checks the HTTP listener's TLS keys go together, as central's do.
func (c Config) validateHTTPTLS() error {
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return errors.New("http_tls_cert and http_tls_key go together: give both (the PEM certificate and its private key) " +
			"to serve http_listen over HTTPS, or neither for plain HTTP")
	}
	if c.HTTPClientCA != "" && c.HTTPTLSCert == "" {
		return errors.New("http_client_ca needs http_tls_cert and http_tls_key: client certificates are checked in the TLS handshake")
	}
	if c.HTTPTLSCert != "" && !edge.HTTPEnabled(c.HTTPListen) {
		return fmt.Errorf("http_tls_cert is set but the HTTP listener is off (http_listen %q): set http_listen to the address to serve HTTPS on, "+
			"or remove http_tls_cert and http_tls_key", c.HTTPListen)
	}
	return nil
}

// httpTLS loads the HTTP listener's certificate and client CA with central's helper, which
// reads them again when they change; nil without http_tls_cert. Each missing file is named by
// its key.
func (c Config) httpTLS() (*tls.Config, error) {
	if c.HTTPTLSCert == "" {
		return nil, nil
	}
	files := []struct{ key, path string }{
		{"http_tls_cert", c.HTTPTLSCert}, {"http_tls_key", c.HTTPTLSKey}, {"http_client_ca", c.HTTPClientCA},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.key, err)
		}
	}
	t, err := httpx.ServerTLS(certreload.Options{
		CertFile: c.HTTPTLSCert, KeyFile: c.HTTPTLSKey, ClientCAFile: c.HTTPClientCA,
		CertName: "http_tls_cert", KeyName: "http_tls_key", ClientCAName: "http_client_ca",
		Listener: "http", Logger: c.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("HTTP listener TLS: %w: http_tls_cert must be a PEM certificate, http_tls_key its private key (PEM), "+
			"http_client_ca a PEM bundle of CA certificates", err)
	}
	return t, nil
}

// warnExposure logs at start what the HTTP listener gives away off loopback: without a token
// or client certificates the status page answers this machine only; with a token over plain
// HTTP, the token and the session cookie travel in clear.
func warnExposure(cfg Config, token string, logger *slog.Logger) {
	if status.IsLoopback(cfg.HTTPListen) {
		return
	}
	switch {
	case token == "" && cfg.HTTPClientCA == "":
		logger.Warn("the status page on the HTTP listener is served to this machine only: set http_token_file (or http_client_ca) to open it to the network",
			"http_listen", cfg.HTTPListen)
	case cfg.HTTPTLS == nil:
		logger.Warn("the HTTP listener is not on loopback and serves plain HTTP: the status page's token and session cookie travel in clear. "+
			"Set http_tls_cert and http_tls_key to serve HTTPS (or put a TLS-terminating proxy in front and listen on 127.0.0.1)",
			"http_listen", cfg.HTTPListen)
	}
}
