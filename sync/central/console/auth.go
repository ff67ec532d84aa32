package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"html"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CookieName is the console's session cookie.
const CookieName = "tributary_console"

// A session is "EXPIRY.MAC": the unix second it ends and an HMAC-SHA256 of it under a key derived
// from the API token. Nothing is stored at central, a restart keeps logins, and a new token ends
// every session at once.
func (c *Console) sessionKey() []byte {
	k := sha256.Sum256([]byte("tributary console session\x00" + c.cfg.Token))
	return k[:]
}

func (c *Console) newSession(now time.Time) string {
	exp := strconv.FormatInt(now.Add(c.cfg.SessionTTL).Unix(), 10)
	m := hmac.New(sha256.New, c.sessionKey())
	m.Write([]byte(exp))
	return exp + "." + hex.EncodeToString(m.Sum(nil))
}

func (c *Console) validSession(v string, now time.Time) bool {
	exp, mac, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() >= n {
		return false
	}
	got, err := hex.DecodeString(mac)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, c.sessionKey())
	m.Write([]byte(exp))
	return hmac.Equal(got, m.Sum(nil))
}

// authorized accepts the session cookie or the API token as a bearer token (for curl).
func (c *Console) authorized(r *http.Request) bool {
	if c.cfg.Token == "" {
		return true
	}
	if ck, err := r.Cookie(CookieName); err == nil && c.validSession(ck.Value, time.Now()) {
		return true
	}
	if tok := httpx.BearerToken(r); tok != "" {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) == 1
	}
	return false
}

// guardPage sends a browser without a login to the login form, and back after it.
func (c *Console) guardPage(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.authorized(r) {
			http.Redirect(w, r, "/console/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// guardAPI answers 401 to a data request without a login or the token.
func (c *Console) guardAPI(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tributary"`)
			writeError(w, http.StatusUnauthorized, "the console's data needs a login: sign in at /console/login, or send central's API token as \"Authorization: Bearer TOKEN\"")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// The login page is written out here rather than through html/template: text/template looks
// methods up by name, which makes the linker keep every exported method of every type in the
// binary (several MB). Every value put into the page goes through html.EscapeString.
const (
	loginHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Tributary</title>
<link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/console/assets/app.css">
</head>
<body>
<header><span class="brand">Tributary</span></header>
<main>
<form class="card login" method="post" action="/console/login">
<h1>Central console</h1>
`
	loginOpen      = `<p>This central has no API token: the console is open on its loopback listener. <a href="{next}">Continue</a>.</p>`
	loginThrottled = `<p class="error" role="alert">Too many failed logins from this address: wait a minute, then paste the whole token from the token file.</p>` + "\n"
	loginFailed    = `<p class="error" role="alert">That is not central's API token. Paste the whole token from the token file.</p>`
	loginAsk       = `<p>Sign in with central's API token (its <code>api_token_file</code>).</p>` + "\n"
	loginFields    = `
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button class="act" type="submit">Sign in</button>`
	loginTail = `
</form>
</main>
</body>
</html>
`
)

// loginHTML is the login page for v; v.Next is escaped for the attributes it goes in.
func loginHTML(v loginView) string {
	next := strings.NewReplacer("{next}", html.EscapeString(v.Next))
	var b strings.Builder
	b.WriteString(loginHead)
	switch {
	case v.NoToken:
		b.WriteString(next.Replace(loginOpen))
		b.WriteString("\n")
	default:
		b.WriteString(loginAsk)
		if v.Throttled {
			b.WriteString(loginThrottled)
		} else if v.Failed {
			b.WriteString(loginFailed)
		}
		b.WriteString(next.Replace(loginFields))
	}
	b.WriteString(loginTail)
	return b.String()
}

type loginView struct {
	Next      string
	Failed    bool
	Throttled bool
	NoToken   bool
}

// Failed logins allowed per address and minute: enough for typos, too few to guess a token.
const (
	maxLoginFailures  = 20
	maxLoginAddresses = 4096 // addresses tracked; past it, new ones share one budget
)

// loginLimiter counts failed logins per remote address over the current minute.
type loginLimiter struct {
	mu     sync.Mutex
	window time.Time
	fails  map[string]int
}

func (l *loginLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Minute {
		l.window, l.fails = now, map[string]int{}
	}
	if _, ok := l.fails[ip]; !ok && len(l.fails) >= maxLoginAddresses {
		ip = ""
	}
	return l.fails[ip] < maxLoginFailures
}

func (l *loginLimiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.fails[ip]; !ok && len(l.fails) >= maxLoginAddresses {
		ip = ""
	}
	l.fails[ip]++
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// safeNext keeps a redirect target on this site: a path, not "//host" or a URL.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") {
		return "/"
	}
	return s
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.renderLogin(w, http.StatusOK, loginView{Next: safeNext(r.URL.Query().Get("next")), NoToken: c.cfg.Token == ""})
}

func (c *Console) renderLogin(w http.ResponseWriter, code int, v loginView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(loginHTML(v)))
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "read the login form: %v", err)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if c.cfg.Token == "" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	ip := remoteIP(r)
	if !c.logins.allow(ip, time.Now()) {
		w.Header().Set("Retry-After", "60")
		c.renderLogin(w, http.StatusTooManyRequests, loginView{Next: next, Failed: true, Throttled: true})
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) != 1 {
		c.logins.fail(ip)
		c.logger.Warn("console login refused: wrong token", "remote", r.RemoteAddr)
		c.renderLogin(w, http.StatusUnauthorized, loginView{Next: next, Failed: true})
		return
	}
	// Secure only over TLS: a browser drops a Secure cookie set over plain http, and plain http
	// is allowed only on loopback.
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: c.newSession(time.Now()), Path: "/",
		MaxAge: int(c.cfg.SessionTTL.Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}
