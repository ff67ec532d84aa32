package console

import (
	"strings"
	"testing"
)

// The login page is written without html/template, so the one value put into it, the
// redirect target, must come out escaped in both places it goes.
func TestLoginPageEscapesNext(t *testing.T) {
	next := safeNext(`/fleet?a=1&b="><script>alert(1)</script>`)
	for _, v := range []loginView{{Next: next}, {Next: next, NoToken: true}, {Next: next, Failed: true}, {Next: next, Throttled: true}} {
		page := loginHTML(v)
		if strings.Contains(page, "<script>") || strings.Contains(page, `"><`) {
			t.Errorf("%+v: the target is not escaped:\n%s", v, page)
		}
		if !strings.Contains(page, `/fleet?a=1&amp;b=&#34;&gt;&lt;script&gt;`) {
			t.Errorf("%+v: the escaped target is missing:\n%s", v, page)
		}
		if got := strings.Contains(page, `role="alert"`); got != (v.Failed || v.Throttled) {
			t.Errorf("%+v: alert shown %v", v, got)
		}
		if got := strings.Contains(page, `name="token"`); got == v.NoToken {
			t.Errorf("%+v: token field shown %v", v, got)
		}
	}
}
