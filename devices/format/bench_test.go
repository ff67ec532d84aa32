package format

import (
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/tributary-iot/tributary/devices"
)

// BenchmarkValidate is the validation cost per reading of each format, through devices.Validate
// as the edge calls it. bytes and plain json allocate nothing; the schema formats decode.
func BenchmarkValidate(b *testing.B) {
	jsonPayload := []byte(`{"device":"boiler-0042","seq":918273,"ts":1718000000123,"temp":21.53}`)
	schemaJSON := load(b, Spec{Format: JSON, Schema: "reading.schema.json"})
	pb := load(b, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"})
	av := load(b, Spec{Format: Avro, Schema: "reading.avsc"})
	avroPayload, err := avro.Marshal(avro.MustParse(av.Text), map[string]any{"device": "boiler-0042", "seq": int64(918273), "temp": 21.53, "note": nil})
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name    string
		payload []byte
		policy  devices.Policy
	}{
		{"bytes", jsonPayload, devices.Policy{}},
		{"json", jsonPayload, devices.Policy{JSON: true}},
		{"json-schema", jsonPayload, devices.Policy{JSON: true, Schema: schemaJSON}},
		{"protobuf", protoReading(b, pb, "boiler-0042", 918273, 21.53), devices.Policy{Schema: pb}},
		{"avro", avroPayload, devices.Policy{Schema: av}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.payload)))
			for b.Loop() {
				if _, reason := devices.Validate(c.payload, c.policy); reason != devices.ReasonNone {
					b.Fatal(reason)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}
