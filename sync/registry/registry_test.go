package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/storage"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Errorf("%s: content type %q", path, ct)
	}
	return rec.Code, rec.Body.String()
}

// The registry serves what the schemas stream holds, in Confluent's shapes: a changed schema is
// a new version, a repeated one is not, and ids are the edges'.
func TestRegistryServesSchemasStream(t *testing.T) {
	log, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	r, err := New(log, Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := r.Handler()
	if code, body := get(t, h, "/subjects"); code != 200 || body != "[]\n" {
		t.Fatalf("no stream yet: %d %s", code, body)
	}
	st, err := log.CreateStream(Stream, storage.StreamConfig{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	v1 := `{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`
	v2 := `{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}`
	for _, text := range []string{v1, v1, v2} {
		s := format.Schema{Type: format.TypeAvro, Text: text, ID: format.ID(format.TypeAvro, text)}
		value, _ := json.Marshal(format.SubjectSchema{Subject: "readings-value", Stream: "readings", Schema: s})
		if _, _, err := st.Append(context.Background(), storage.Record{Key: []byte("readings"), Value: value, Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := get(t, h, "/subjects"); code != 200 || body != `["readings-value"]`+"\n" {
		t.Fatalf("/subjects: %d %s", code, body)
	}
	if code, body := get(t, h, "/subjects/readings-value/versions"); code != 200 || body != "[1,2]\n" {
		t.Fatalf("versions: %d %s", code, body)
	}
	var sv subjectVersion
	_, body := get(t, h, "/subjects/readings-value/versions/latest")
	if err := json.Unmarshal([]byte(body), &sv); err != nil || sv.Version != 2 || sv.Schema != v2 || sv.ID != format.ID(format.TypeAvro, v2) || sv.Type != "" {
		t.Fatalf("latest: %s", body)
	}
	code, body := get(t, h, "/schemas/ids/"+itoa(format.ID(format.TypeAvro, v1)))
	if code != 200 || body != `{"schema":`+quote(v1)+"}\n" {
		t.Fatalf("by id: %d %s", code, body)
	}
	for path, want := range map[string]string{
		"/subjects/nope-value/versions":       `{"error_code":40401,"message":"Subject 'nope-value' not found."}`,
		"/subjects/readings-value/versions/3": `{"error_code":40402,"message":"Version 3 not found."}`,
		"/schemas/ids/7":                      `{"error_code":40403,"message":"Schema 7 not found"}`,
	} {
		if code, body := get(t, h, path); code != 404 || body != want+"\n" {
			t.Errorf("%s: %d %s, want 404 %s", path, code, body, want)
		}
	}
}

func itoa(n int32) string   { b, _ := json.Marshal(n); return string(b) }
func quote(s string) string { b, _ := json.Marshal(s); return string(b) }
