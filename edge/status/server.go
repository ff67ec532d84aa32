package status

import (
	"embed"
	"html"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// assets are the page's files, built into the binary: no build step, nothing fetched from
// elsewhere, so the page works on a plant network with no internet.
//
//go:embed assets
var assets embed.FS

// The login page is written out here rather than through html/template: text/template looks
// methods up by name, which makes the linker keep every exported method of every type in the
// binary (several MB). Every value put into the page goes through html.EscapeString.
const (
	loginHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tributary edge: log in</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/status/static/style.css">
</head>
<body>
<main class="login">
  <h1>Tributary edge</h1>
  `
	loginForm = `
  <form method="post" action="/login">
    <label for="token">Status token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
    <button type="submit">Log in</button>
  </form>
  <p class="muted small">The token is in the file the edge's http_token_file names.</p>
  `
	loginTail = `
</main>
</body>
</html>
`
)

// loginHTML is the login page for v.
func loginHTML(v loginView) string {
	var b strings.Builder
	b.WriteString(loginHead)
	if v.Error != "" {
		b.WriteString(`<p class="problem">` + html.EscapeString(v.Error) + `</p>`)
	}
	if !v.NoAuth {
		b.WriteString(loginForm)
	}
	b.WriteString(loginTail)
	return b.String()
}

// routes: the page at /, its data at /status/api and /status/plot.svg, its files at
// /status/static/, and the login form.
func (p *Page) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /status/static/", http.StripPrefix("/status/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", p.guarded(true, func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	}))
	mux.HandleFunc("GET /status/api", p.guarded(false, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, p.Snapshot(r.URL.Query().Get("history") == "1"))
	}))
	mux.HandleFunc("GET /status/plot.svg", p.guarded(false, func(w http.ResponseWriter, r *http.Request) {
		chart, ok := plots[r.URL.Query().Get("chart")]
		if !ok {
			writeJSONError(w, http.StatusNotFound, "unknown chart: use ?chart=rates or ?chart=backlog")
			return
		}
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(plotSVG(chart, p.history.Samples(nil), time.Now(), p.cfg.Window))
	}))
	mux.HandleFunc("GET /login", p.loginForm)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, p.guard.cookie(r, "", -1))
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	})
	return securityHeaders(mux)
}

func (p *Page) guarded(page bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a := p.guard.check(r); a != allowed {
			refuse(w, r, a, page)
			return
		}
		h(w, r)
	}
}

type loginView struct {
	Error  string
	NoAuth bool
}

func (p *Page) loginForm(w http.ResponseWriter, r *http.Request) {
	if p.guard.token == nil {
		// Nothing to log in to: loopback clients see the page, others are told how to set a token.
		if remoteIsLoopback(r) || clientCertVerified(r) {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		p.renderLogin(w, http.StatusForbidden, loginView{Error: notLoopbackMessage, NoAuth: true})
		return
	}
	p.renderLogin(w, http.StatusOK, loginView{})
}

func (p *Page) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if p.guard.token == nil {
		p.loginForm(w, r)
		return
	}
	if err := r.ParseForm(); err != nil || !p.guard.validToken(r.PostForm.Get("token")) {
		p.cfg.Logger.Warn("status page login refused", "remote", r.RemoteAddr)
		p.renderLogin(w, http.StatusUnauthorized, loginView{Error: "That is not this edge's status token (http_token_file in its config)."})
		return
	}
	http.SetCookie(w, p.guard.cookie(r, p.guard.session, 0))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (p *Page) renderLogin(w http.ResponseWriter, status int, v loginView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(loginHTML(v)))
}

// securityHeaders keep the page's own scripts the only ones that run, and the page out of
// other sites' frames.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}
