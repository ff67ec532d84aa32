package status

import (
	"strings"
	"testing"
)

// The login page is written without html/template, so its message must come out escaped.
func TestLoginPageEscapesError(t *testing.T) {
	page := loginHTML(loginView{Error: `<b>"x" & y</b>`})
	if !strings.Contains(page, `<p class="problem">&lt;b&gt;&#34;x&#34; &amp; y&lt;/b&gt;</p>`) {
		t.Errorf("the message is not escaped:\n%s", page)
	}
	if !strings.Contains(page, `name="token"`) {
		t.Error("no token field")
	}
	if page := loginHTML(loginView{NoAuth: true}); strings.Contains(page, `name="token"`) || strings.Contains(page, "problem") {
		t.Errorf("no-auth page without a message shows a form or a problem:\n%s", page)
	}
}
