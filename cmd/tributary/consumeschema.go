package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/registry"
)

// Headers consume asks for besides the user's, to decode values of schema streams.
const (
	headerSchemaID    = "schema-id"
	headerSchemaIndex = "schema-index"
)

// withSchemaHeaders adds the schema headers to a --headers value, so lines of protobuf and Avro
// streams can be decoded.
func withSchemaHeaders(headers string) string {
	switch headers {
	case "all":
		return headers
	case "none":
		return headerSchemaID + "," + headerSchemaIndex
	case "":
		return "topic,device-time,edge-incarnation," + headerSchemaID + "," + headerSchemaIndex
	}
	return headers + "," + headerSchemaID + "," + headerSchemaIndex
}

// schemaDecoder turns the value_base64 of lines whose record names a schema (protobuf, Avro)
// into "value": the decoded value as JSON, with the schema fetched once from central's registry.
// A value that cannot be decoded keeps its value_base64, and the reason is said once per schema
// on stderr: for a schema that could not be fetched, and for the first value that did not decode.
type schemaDecoder struct {
	baseURL, token string
	client         *http.Client
	schemas        map[string]*format.Schema // by "id/index"
	failed         map[string]bool
	undecodable    map[string]bool // schemas of which a value did not decode, already said
	warn           func(string)
}

func newSchemaDecoder(baseURL, token string, warn func(string)) *schemaDecoder {
	return &schemaDecoder{baseURL: strings.TrimRight(baseURL, "/"), token: token, client: &http.Client{Timeout: 30 * time.Second},
		schemas: map[string]*format.Schema{}, failed: map[string]bool{}, undecodable: map[string]bool{}, warn: warn}
}

// rewrite returns line with its value decoded when its record names a schema, else line itself.
// It runs for every line: a JSON reading (value last, as JSON) is passed on after a look at the
// line's last bytes, and only a value_base64 line is searched for the schema header.
func (d *schemaDecoder) rewrite(ctx context.Context, line []byte) []byte {
	b64, start, ok := consume.LineValueBase64(line)
	if !ok || !bytes.Contains(line[:start], []byte(`"`+headerSchemaID+`"`)) {
		return line
	}
	var v struct {
		Partition int               `json:"partition"`
		Offset    int64             `json:"offset"`
		Headers   map[string]string `json:"headers"`
	}
	if json.Unmarshal(line, &v) != nil || v.Headers[headerSchemaID] == "" {
		return line
	}
	key := v.Headers[headerSchemaID] + "/" + v.Headers[headerSchemaIndex]
	s, ok := d.schemas[key]
	if !ok {
		if d.failed[key] {
			return line
		}
		var err error
		if s, err = d.fetch(ctx, v.Headers[headerSchemaID], v.Headers[headerSchemaIndex]); err != nil {
			d.failed[key] = true
			d.warn(fmt.Sprintf("consume: values of schema %s are printed as value_base64: %v", v.Headers[headerSchemaID], err))
			return line
		}
		d.schemas[key] = s
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(raw, b64)
	if err != nil {
		return line
	}
	js, err := s.DecodeJSON(raw[:n])
	if err != nil {
		if !d.undecodable[key] {
			d.undecodable[key] = true
			d.warn(fmt.Sprintf("consume: the value at partition %d offset %d does not decode with schema %s (%v): printed as value_base64, as any other such value of that schema will be",
				v.Partition, v.Offset, v.Headers[headerSchemaID], err))
		}
		return line
	}
	// The line up to value_base64's field, then "value" and the closing brace.
	out := bytes.NewBuffer(make([]byte, 0, start+len(js)+8))
	out.Write(line[:start-len(`,"value_base64":"`)])
	out.WriteString(`,"value":`)
	if json.Compact(out, js) != nil {
		return line
	}
	out.WriteString("}\n")
	return out.Bytes()
}

func (d *schemaDecoder) fetch(ctx context.Context, id, index string) (*format.Schema, error) {
	n, err := strconv.ParseInt(id, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("schema id %q", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.baseURL+"/schemas/ids/"+id, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", registry.ContentType)
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("central's registry answered %s for schema %s", resp.Status, id)
	}
	var got struct {
		Type   string `json:"schemaType"`
		Schema string `json:"schema"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return nil, fmt.Errorf("read schema %s: %w", id, err)
	}
	var path []int
	if index != "" {
		for _, p := range strings.Split(index, ".") {
			i, err := strconv.Atoi(p)
			if err != nil {
				return nil, fmt.Errorf("schema-index %q", index)
			}
			path = append(path, i)
		}
	}
	return format.Parse(format.Schema{Type: got.Type, Text: got.Schema, ID: int32(n), Index: path})
}
