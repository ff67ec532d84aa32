package central

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	// netutil.LimitListener caps central's open connections, so a flood of idle ones cannot use
	// up its file descriptors (the log needs them too).
	"golang.org/x/net/netutil"

	"github.com/tributary-iot/tributary/sync/internal/httpx"
)

// APITokenEnv passes central's API token without a flag that `ps` shows.
const APITokenEnv = "TRIBUTARY_API_TOKEN"

// Defaults of the listener's bounds.
const (
	DefaultMaxConnections = 1024
)

// resolveAPIToken fills cfg.APIToken from api_token_file when that is set.
func resolveAPIToken(cfg *Config) error {
	if cfg.APITokenFile == "" {
		return nil
	}
	if cfg.APIToken != "" {
		return errors.New("both api_token and api_token_file are set: keep one (the file keeps the token out of the config and of ps)")
	}
	b, err := os.ReadFile(cfg.APITokenFile)
	if err != nil {
		return fmt.Errorf("read api token file: %w", err)
	}
	if fi, err := os.Stat(cfg.APITokenFile); err == nil && fi.Mode().Perm()&0o004 != 0 && cfg.Logger != nil {
		cfg.Logger.Warn("the API token file is readable by every user of this machine: chmod 0640 (or 0600) it",
			"file", cfg.APITokenFile, "mode", fi.Mode().Perm().String())
	}
	cfg.APIToken = strings.TrimSpace(string(b))
	if cfg.APIToken == "" {
		return fmt.Errorf("api token file %s is empty: put a long random token in it (e.g. openssl rand -hex 32)", cfg.APITokenFile)
	}
	return nil
}

// checkExposure refuses an API that anyone on the network could read: the consume, groups and
// edges API, the web console and /metrics need a token or client certificates whenever the
// listener is not on loopback, as plain HTTP is refused there.
func checkExposure(cfg Config) error {
	if IsLoopback(cfg.Listen) || cfg.APIToken != "" || cfg.ClientCA != "" {
		return nil
	}
	return fmt.Errorf("refusing to serve the consume, groups and edges API on %s, which is not a loopback address, without credentials: anyone reaching it could read every reading and move consumer groups. "+
		"Set api_token_file (or %s), or client_ca for mutual TLS, or listen on 127.0.0.1", cfg.Listen, APITokenEnv)
}

// requireToken guards h with the API token (when one is set), compared in constant time. A
// refused request's connection is closed without reading its body.
func requireToken(token string, h http.Handler) http.Handler {
	return guard(token, h, httpx.BearerToken)
}

// requireRegistryToken is requireToken for the schema registry's routes. Schema Registry
// clients send credentials as HTTP Basic (Confluent's: basic.auth.user.info=USER:PASSWORD), so
// there the token is also taken as a Basic password, under any user name.
func requireRegistryToken(token string, h http.Handler) http.Handler {
	return guard(token, h, func(r *http.Request) string {
		if _, password, ok := r.BasicAuth(); ok {
			return password
		}
		return httpx.BearerToken(r)
	})
}

func guard(token string, h http.Handler, presented func(*http.Request) string) http.Handler {
	if token == "" {
		return h
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(presented(r)), want) != 1 {
			httpx.CloseUnread(w)
			w.Header().Set("WWW-Authenticate", `Bearer realm="tributary"`)
			httpx.WriteError(w, http.StatusUnauthorized, "this API needs central's API token: pass --token-file FILE (or set %s) to the command, or \"Authorization: Bearer TOKEN\"", APITokenEnv)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limitConnections caps the listener's open connections: past the cap, new connections wait in
// the kernel's backlog until one closes.
func limitConnections(ln net.Listener, max int) net.Listener {
	return netutil.LimitListener(ln, max)
}
