// Package registry is central's schema registry: it reads the schemas stream edges forward (one
// record per stream and schema version, written by the edge when a stream's declared schema
// changes) and serves a read-only subset of the Confluent Schema Registry API, so standard Kafka
// deserializers find the schema a value's id names:
//
//	GET /subjects                                 ["readings-value", ...]
//	GET /subjects/{subject}/versions              [1, 2]
//	GET /subjects/{subject}/versions/{version}    {"subject","id","version","schema"[,"schemaType"]}; version may be "latest"
//	GET /schemas/ids/{id}                         {"schema"[,"schemaType"]}
//
// Answers use Confluent's JSON shapes and content type, errors its error codes (40401 subject,
// 40402 version, 40403 schema not found). Ids are the edges' (derived from the schema's text, so
// every edge agrees); versions number a subject's distinct schemas in the order central stored
// them. The registry holds no state of its own: it is rebuilt from the stream, which is read up to
// its end on each request.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/tributary-iot/tributary/storage"
)

// Stream is the central stream the registry reads; the edge's devices.SchemaStream.
const Stream = "schemas"

// ContentType is the Schema Registry's media type.
const ContentType = "application/vnd.schemaregistry.v1+json"

// Config configures a Registry. Logger nil discards.
type Config struct {
	Logger *slog.Logger
}

// Schema is one registered schema.
type Schema struct {
	ID   int32  `json:"id"`
	Type string `json:"schemaType"` // JSON, PROTOBUF, AVRO
	Text string `json:"schema"`
}

// Registry serves the schemas of a log's schemas stream.
type Registry struct {
	log    *storage.Log
	logger *slog.Logger

	mu       sync.Mutex
	next     []int64            // per partition of the stream: the offset read up to
	subjects map[string][]int32 // subject → schema id per version (version = index + 1)
	schemas  map[int32]Schema
}

// New returns a registry over log's schemas stream (which may not exist yet).
func New(log *storage.Log, cfg Config) (*Registry, error) {
	if log == nil {
		return nil, errors.New("registry needs a log")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{log: log, logger: logger, subjects: map[string][]int32{}, schemas: map[int32]Schema{}}, nil
}

// record is the schemas-stream record value (devices/format.SubjectSchema).
type record struct {
	Subject string `json:"subject"`
	Schema
}

// catchUp reads the schemas stream to its end. Callers hold mu.
func (r *Registry) catchUp(ctx context.Context) error {
	st, err := r.log.Stream(Stream)
	if errors.Is(err, storage.ErrNoStream) {
		return nil
	}
	if err != nil {
		return err
	}
	for len(r.next) < st.Partitions() {
		r.next = append(r.next, 0)
	}
	for p := range st.Partitions() {
		rd := st.Partition(p).NewReader(r.next[p], nil)
		for {
			e, err := rd.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s/%d: %w", Stream, p, err)
			}
			if e.Gap == nil {
				r.add(e.Value, p, e.Offset)
			}
		}
		r.next[p] = rd.Offset()
	}
	return nil
}

func (r *Registry) add(value []byte, partition int, offset int64) {
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil || rec.Subject == "" || rec.Text == "" || rec.ID <= 0 {
		r.logger.Warn("schemas stream: record skipped, not a schema", "partition", partition, "offset", offset, "err", err)
		return
	}
	if have, ok := r.schemas[rec.ID]; ok && (have.Text != rec.Text || have.Type != rec.Type) {
		r.logger.Error("schemas stream: two schemas share an id; the later is not served", "id", rec.ID,
			"subject", rec.Subject, "partition", partition, "offset", offset)
		return
	}
	r.schemas[rec.ID] = rec.Schema
	if !slices.Contains(r.subjects[rec.Subject], rec.ID) {
		r.subjects[rec.Subject] = append(r.subjects[rec.Subject], rec.ID)
	}
}

// ByID returns the schema with an id.
func (r *Registry) ByID(ctx context.Context, id int32) (Schema, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.catchUp(ctx); err != nil {
		return Schema{}, false, err
	}
	s, ok := r.schemas[id]
	return s, ok, nil
}

// Handler serves the read API. Mount it at / or behind a prefix stripped with http.StripPrefix.
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /subjects", r.serveSubjects)
	mux.HandleFunc("GET /subjects/{subject}/versions", r.serveVersions)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}", r.serveVersion)
	mux.HandleFunc("GET /schemas/ids/{id}", r.serveID)
	return mux
}

// Patterns are the routes Handler serves, for mounting it on central's mux.
var Patterns = []string{"GET /subjects", "GET /subjects/{subject}/versions", "GET /subjects/{subject}/versions/{version}", "GET /schemas/ids/{id}"}

func (r *Registry) locked(w http.ResponseWriter, req *http.Request, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.catchUp(req.Context()); err != nil {
		writeError(w, http.StatusInternalServerError, 50001, "read the schemas stream: "+err.Error())
		return
	}
	f()
}

func (r *Registry) serveSubjects(w http.ResponseWriter, req *http.Request) {
	r.locked(w, req, func() {
		names := make([]string, 0, len(r.subjects))
		for s := range r.subjects {
			names = append(names, s)
		}
		slices.Sort(names)
		write(w, http.StatusOK, names)
	})
}

func (r *Registry) serveVersions(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.locked(w, req, func() {
		ids, ok := r.subjects[subject]
		if !ok {
			writeError(w, http.StatusNotFound, 40401, fmt.Sprintf("Subject '%s' not found.", subject))
			return
		}
		versions := make([]int, len(ids))
		for i := range ids {
			versions[i] = i + 1
		}
		write(w, http.StatusOK, versions)
	})
}

func (r *Registry) serveVersion(w http.ResponseWriter, req *http.Request) {
	subject, v := req.PathValue("subject"), req.PathValue("version")
	r.locked(w, req, func() {
		ids, ok := r.subjects[subject]
		if !ok {
			writeError(w, http.StatusNotFound, 40401, fmt.Sprintf("Subject '%s' not found.", subject))
			return
		}
		version := len(ids)
		if v != "latest" && v != "-1" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				writeError(w, http.StatusUnprocessableEntity, 42202, "The specified version '"+v+"' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")
				return
			}
			version = n
		}
		if version > len(ids) {
			writeError(w, http.StatusNotFound, 40402, fmt.Sprintf("Version %d not found.", version))
			return
		}
		s := r.schemas[ids[version-1]]
		write(w, http.StatusOK, subjectVersion{Subject: subject, ID: s.ID, Version: version, Type: confluentType(s.Type), Schema: s.Text})
	})
}

func (r *Registry) serveID(w http.ResponseWriter, req *http.Request) {
	n, err := strconv.ParseInt(req.PathValue("id"), 10, 32)
	r.locked(w, req, func() {
		s, ok := r.schemas[int32(n)]
		if err != nil || !ok {
			writeError(w, http.StatusNotFound, 40403, "Schema "+req.PathValue("id")+" not found")
			return
		}
		write(w, http.StatusOK, schemaByID{Type: confluentType(s.Type), Schema: s.Text})
	})
}

type subjectVersion struct {
	Subject string `json:"subject"`
	ID      int32  `json:"id"`
	Version int    `json:"version"`
	Type    string `json:"schemaType,omitempty"`
	Schema  string `json:"schema"`
}

type schemaByID struct {
	Type   string `json:"schemaType,omitempty"`
	Schema string `json:"schema"`
}

// confluentType leaves AVRO out, as the Confluent registry does: clients read no schemaType as Avro.
func confluentType(t string) string {
	if t == "AVRO" {
		return ""
	}
	return t
}

func write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code, errorCode int, msg string) {
	write(w, code, map[string]any{"error_code": errorCode, "message": msg})
}
