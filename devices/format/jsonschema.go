package format

import (
	"bytes"
	"errors"
	"strings"

	// JSON Schema validation (drafts 4 to 2020-12), pinned at v6.0.3 in go.mod: pure Go, and its
	// errors carry the keyword and instance paths a dead letter's detail needs.
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/tributary-iot/tributary/devices"
)

const jsonSchemaURL = "tributary:stream-schema.json"

func newJSONSchema(text string) (*Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	// No loader: a schema that $refs a URL outside itself fails here instead of fetching it.
	c.UseLoader(jsonschema.SchemeURLLoader{})
	if err := c.AddResource(jsonSchemaURL, doc); err != nil {
		return nil, err
	}
	compiled, err := c.Compile(jsonSchemaURL)
	if err != nil {
		return nil, err
	}
	s := &Schema{Type: TypeJSON, Text: text, ID: ID(TypeJSON, text), content: devices.ContentTypeJSON}
	s.check = func(payload []byte) (devices.Reason, string) {
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
		if err != nil {
			return devices.ReasonNotJSON, err.Error()
		}
		err = compiled.Validate(inst)
		if err == nil {
			return devices.ReasonNone, ""
		}
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return devices.ReasonSchema, err.Error()
		}
		return devices.ReasonSchema, violation(ve)
	}
	s.decode = func(payload []byte) ([]byte, error) { return payload, nil }
	return s, nil
}

var english = message.NewPrinter(language.English)

// violation names the first rule a payload broke, and where, on one line:
// "at /temp: maximum: got 150, want 125".
func violation(ve *jsonschema.ValidationError) string {
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	var b strings.Builder
	b.WriteString("at /")
	b.WriteString(strings.Join(ve.InstanceLocation, "/"))
	b.WriteString(": ")
	if ve.ErrorKind != nil {
		msg := ve.ErrorKind.LocalizedString(english)
		// Name the rule: most messages start with their keyword, some ("missing property") not.
		if kw := ve.ErrorKind.KeywordPath(); len(kw) > 0 && !strings.HasPrefix(msg, kw[len(kw)-1]) {
			b.WriteString(kw[len(kw)-1])
			b.WriteString(": ")
		}
		b.WriteString(msg)
	}
	return b.String()
}
