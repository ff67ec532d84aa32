package status

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestNoTokenServesLoopbackOnly: without a token the page and its data answer this machine, and
// a client from another machine (a listener on 0.0.0.0) gets 403 with what to do.
func TestNoTokenServesLoopbackOnly(t *testing.T) {
	a, p := edgeWithPage(t, Config{})
	base := "http://" + a.HTTPAddr()
	for _, path := range []string{"/", "/status/api", "/status/plot.svg?chart=rates"} {
		if resp := get(t, base+path, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s from loopback without a token: %d, want 200", path, resp.StatusCode)
		}
	}
	for _, path := range []string{"/", "/status/api", "/status/plot.svg?chart=rates", "/login"} {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "192.0.2.7:50000"
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "http_token_file") {
			t.Errorf("GET %s from another machine without a token: %d %q, want 403 naming http_token_file", path, rec.Code, rec.Body.String())
		}
	}
	// The page's own files carry no data: they load for the login form too.
	if resp := get(t, base+"/status/static/status.js", nil); resp.StatusCode != 200 {
		t.Errorf("static file: %d", resp.StatusCode)
	}
}

// TestTokenLogin: with a token every request needs it, from loopback too. The page redirects
// to the login form, the data endpoints answer 401; a wrong token is refused; the right one
// sets an HttpOnly, SameSite=Strict session cookie (Secure over TLS) that is not the token.
func TestTokenLogin(t *testing.T) {
	const token = "s3cret-status-token"
	a, p := edgeWithPage(t, Config{Token: token})
	base := "http://" + a.HTTPAddr()
	if resp := get(t, base+"/", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("GET / without the token: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/status/api", "/status/plot.svg?chart=rates"} {
		if resp := get(t, base+path, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, resp.StatusCode)
		}
	}
	if resp := get(t, base+"/login", nil); resp.StatusCode != 200 {
		t.Errorf("login form: %d", resp.StatusCode)
	}
	post := func(tok string) *http.Response {
		resp, err := noRedirect.PostForm(base+"/login", url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("wrong"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d, cookies %v; want 401 and none", resp.StatusCode, resp.Cookies())
	}
	resp := post(token)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d, cookies %v; want 303 and a session cookie", resp.StatusCode, resp.Cookies())
	}
	c := resp.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Value == token || strings.Contains(c.Value, token) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP, and not the token", c)
	}
	withCookie := func(r *http.Request) { r.AddCookie(c) }
	if resp := get(t, base+"/status/api", withCookie); resp.StatusCode != 200 {
		t.Errorf("API with the session cookie: %d", resp.StatusCode)
	}
	if resp := get(t, base+"/", withCookie); resp.StatusCode != 200 {
		t.Errorf("page with the session cookie: %d", resp.StatusCode)
	}
	forged := func(r *http.Request) { r.AddCookie(&http.Cookie{Name: cookieName, Value: token}) }
	if resp := get(t, base+"/status/api", forged); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API with the token as cookie: %d, want 401", resp.StatusCode)
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	if resp := get(t, base+"/status/api", bearer); resp.StatusCode != 200 {
		t.Errorf("API with Authorization: Bearer: %d", resp.StatusCode)
	}

	// Over TLS the cookie is Secure.
	req := httptest.NewRequest("POST", "/login", strings.NewReader("token="+token))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if cs := rec.Result().Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Errorf("login over TLS: cookies %+v, want one Secure cookie", cs)
	}
}
