package status

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// TokenEnv passes the status page's token without a file or a flag.
const TokenEnv = "TRIBUTARY_EDGE_HTTP_TOKEN"

// cookieName holds a logged-in browser's session: an HMAC of the token, never the token itself,
// so a cookie leaked from a browser profile does not work as a bearer token on the API, and
// every session ends when the token is rotated.
const cookieName = "tributary_edge_session"

// LoadToken reads the status page's token from file (when set), else from TokenEnv; "" means
// none, and the page is then served to this machine only.
func LoadToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv(TokenEnv)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read status page token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("status page token file %s is empty: put a long random token in it (e.g. openssl rand -hex 32)", file)
	}
	return t, nil
}

// IsLoopback reports whether a listen address binds only loopback interfaces.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard is the login rule central's API follows: with a token, every request needs it (a
// browser through the login form's cookie, a script through "Authorization: Bearer"); without
// one, only this machine is served, so a listener opened to the network shows nothing until a
// token is set.
type guard struct {
	token   []byte
	session string // the cookie value a login sets
}

func newGuard(token string) guard {
	if token == "" {
		return guard{}
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("tributary edge status session v1"))
	return guard{token: []byte(token), session: base64.RawURLEncoding.EncodeToString(mac.Sum(nil))}
}

type access int

const (
	allowed     access = iota
	needLogin          // a token is set and the request does not carry it
	notLoopback        // no token is set and the request comes from another machine
)

func (g guard) check(r *http.Request) access {
	if g.token == nil {
		if remoteIsLoopback(r) || clientCertVerified(r) {
			return allowed
		}
		return notLoopback
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(bearer)), g.token) == 1 {
		return allowed
	}
	if c, err := r.Cookie(cookieName); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(g.session)) == 1 {
		return allowed
	}
	return needLogin
}

func (g guard) validToken(t string) bool {
	return g.token != nil && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(t)), g.token) == 1
}

// cookie is the session cookie a login sets: HttpOnly (scripts cannot read it), SameSite=Strict
// (another site's form cannot use it), Secure when the page is served over TLS.
func (g guard) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: maxAge}
}

func remoteIsLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientCertVerified reports whether the request came over TLS with a client certificate the
// listener verified against its client CA (http_client_ca): such a client holds credentials
// the operator issued, as central's API takes client certificates in place of its token.
func clientCertVerified(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

const notLoopbackMessage = "the edge status page is served only to this machine while no token is set: " +
	"set http_token_file in the edge's config (or " + TokenEnv + ") or http_client_ca, or open it on the gateway itself (ssh -L 9464:127.0.0.1:9464)"

// refuse answers a request the guard did not allow: the page redirects to the login form, the
// data endpoints answer 401 (or 403 from another machine without a token) with a JSON reason.
func refuse(w http.ResponseWriter, r *http.Request, a access, page bool) {
	switch {
	case a == needLogin && page:
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	case a == needLogin:
		w.Header().Set("WWW-Authenticate", `Bearer realm="tributary-edge"`)
		writeJSONError(w, http.StatusUnauthorized, "this status endpoint needs the edge's status token: log in at /login, or send \"Authorization: Bearer TOKEN\"")
	default:
		writeJSONError(w, http.StatusForbidden, notLoopbackMessage)
	}
}
