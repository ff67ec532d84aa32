// Package httpx holds the small HTTP helpers central's APIs and the forwarder share that are not
// the sync protocol itself: JSON answers and errors, bearer tokens, refusing without reading a
// body, CA pools, and the TLS configuration of a listener (central's and the edge's HTTP one).
package httpx

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/devices/certreload"
)

// ErrorBody is the body of every non-2xx answer of central's HTTP APIs: {"error": "..."}.
// protocol.Error extends it with the lane's position.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteJSON writes v as the JSON body with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes an ErrorBody.
func WriteError(w http.ResponseWriter, code int, format string, args ...any) {
	WriteJSON(w, code, ErrorBody{Error: fmt.Sprintf(format, args...)})
}

// CloseUnread marks a refused request's connection for closing without reading its body:
// net/http would otherwise drain up to 256 KiB of it after the answer, waiting for as long as a
// peer that never sends it likes.
func CloseUnread(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) string {
	t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(t)
}

// CertPool reads a PEM bundle of CA certificates, for central's client CA and the edge's trust of
// central (what describes the file in errors).
func CertPool(file, what string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", what, file)
	}
	return pool, nil
}

// ServerTLS is the TLS configuration of central's listener and of the edge's HTTP listener, so
// both take the same files the same way: a PEM certificate and its private key, TLS 1.2 or
// newer, HTTP/2 offered; with a client CA (a PEM bundle) every client must present a
// certificate signed by it, checked in the handshake. The files are read now (bad ones are an
// error) and again when they change, so a renewed certificate or CA needs no restart
// (certreload).
func ServerTLS(files certreload.Options) (*tls.Config, error) {
	r, err := certreload.New(files)
	if err != nil {
		return nil, err
	}
	return r.ServerConfig(&tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		ClientAuth: clientAuth(files.ClientCAFile)}), nil
}

func clientAuth(clientCA string) tls.ClientAuthType {
	if clientCA == "" {
		return tls.NoClientCert
	}
	return tls.RequireAndVerifyClientCert
}
