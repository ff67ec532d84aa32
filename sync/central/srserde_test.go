package central_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	// franz-go's Schema Registry client and serde, written elsewhere: it reads the Confluent wire
	// format the Kafka sink frames and fetches schemas from central's registry by their id, as a
	// Go consumer of the topic would.
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/kafkasink"
)

// sentReading is what a device sent, and what a consumer must decode.
type sentReading struct {
	device string
	seq    int64
	temp   float64
}

// TestKafkaSinkFramingFranzGoSerde forwards protobuf and Avro readings (the payloads devices send,
// with the schema headers the edge sets) from an edge log to central, whose Kafka sink frames them
// in the Confluent wire format into kfake. franz-go's pkg/sr, a client written elsewhere, reads
// each value's schema id and message index and fetches the schema from central's real registry;
// protocompile with dynamicpb, and hamba/avro, decode the value with the schema text it returned.
// Every value decodes to what its device sent, in order per device.
func TestKafkaSinkFramingFranzGoSerde(t *testing.T) {
	for _, c := range []struct {
		stream string
		spec   format.Spec
		encode func(t *testing.T, r sentReading) []byte
		decode func(t *testing.T, s sr.Schema, index []int, payload []byte) sentReading
	}{
		{"telemetry", format.Spec{Format: format.Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"},
			encodeProto, decodeProto},
		{"metrics", format.Spec{Format: format.Avro, Schema: "reading.avsc"}, encodeAvro, decodeAvro},
	} {
		t.Run(c.stream, func(t *testing.T) {
			schema, err := format.Load(c.spec, filepath.Join("..", "..", "devices", "format", "testdata"))
			if err != nil {
				t.Fatal(err)
			}
			const partitions, devs, perDevice = 4, 6, 20
			cluster, centralURL, token := runCentralKafkaSink(t, partitions, kafkasink.Config{Topic: "tributary-" + c.stream,
				Stream: c.stream, ConfluentFraming: true})
			ctx := context.Background()

			// The edge's log, as the agent writes it: the stream's schema in the schemas stream,
			// and each accepted reading with its schema id (and protobuf message index) headers.
			log, err := storage.Open(t.TempDir(), &storage.Options{SegmentBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			schemas, err := log.CreateStream(devices.SchemaStream, storage.StreamConfig{Partitions: 1})
			if err != nil {
				t.Fatal(err)
			}
			rec, err := schema.Record(c.stream)
			if err != nil {
				t.Fatal(err)
			}
			id := []byte(strconv.Itoa(int(schema.ID)))
			if _, _, err := schemas.Append(ctx, storage.Record{Key: []byte(c.stream), Value: rec, Timestamp: time.Now(),
				Headers: []storage.Header{{Key: edge.HeaderSchemaID, Value: id}}}); err != nil {
				t.Fatal(err)
			}
			st, err := log.CreateStream(c.stream, storage.StreamConfig{Partitions: partitions})
			if err != nil {
				t.Fatal(err)
			}
			headers := []storage.Header{{Key: edge.HeaderSchemaID, Value: id}}
			if schema.Type == format.TypeProtobuf {
				headers = append(headers, storage.Header{Key: edge.HeaderSchemaIndex, Value: []byte("0")})
			}
			for seq := int64(1); seq <= perDevice; seq++ {
				for d := 0; d < devs; d++ {
					r := sentReading{fmt.Sprintf("dev-%d", d), seq, 20 + float64(d) + float64(seq)/8}
					payload := c.encode(t, r)
					if reason, detail := schema.Check(payload); reason != "" {
						t.Fatalf("the edge refuses %+v: %s %s", r, reason, detail)
					}
					if _, _, err := st.Append(ctx, storage.Record{Key: []byte(r.device), Value: payload,
						Timestamp: time.Now(), Headers: headers}); err != nil {
						t.Fatal(err)
					}
				}
			}
			reg, err := sr.NewClient(sr.URLs(centralURL))
			if err != nil {
				t.Fatal(err)
			}
			// The readings reach central before their schema (the forwarder's lanes are
			// independent): the sink must hold their framed values back until central's
			// registry serves the schema id, or Schema Registry deserializers fail on them.
			_, stopData := runForwarder(t, log, forward.Config{CentralURL: centralURL, EdgeID: "gw-1", Token: token,
				Streams: []string{c.stream}})
			defer stopData()
			for deadline := time.Now().Add(20 * time.Second); streamRecords(t, centralURL, c.stream) < devs*perDevice; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("central holds %d of the %d readings after 20s", streamRecords(t, centralURL, c.stream), devs*perDevice)
				}
			}
			held := kafkaReader(t, cluster, "tributary-"+c.stream)
			hctx, hcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			early := held.PollFetches(hctx).NumRecords()
			hcancel()
			held.Close()
			if early != 0 {
				t.Fatalf("%d framed values reached Kafka before central's registry served their schema", early)
			}
			if _, err := reg.SchemaByID(ctx, int(schema.ID)); err == nil {
				t.Fatal("central's registry serves the schema before the edge's schemas stream was forwarded")
			}
			_, stopFwd := runForwarder(t, log, forward.Config{CentralURL: centralURL, EdgeID: "gw-1", Token: token,
				Streams: []string{devices.SchemaStream}})
			defer stopFwd()
			var header sr.ConfluentHeader
			cl := kafkaReader(t, cluster, "tributary-"+c.stream)
			defer cl.Close()
			fetched := map[int]sr.Schema{}
			last := map[string]int64{}
			got := 0
			for deadline := time.Now().Add(30 * time.Second); got < devs*perDevice && time.Now().Before(deadline); {
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				fs := cl.PollFetches(pctx)
				pcancel()
				fs.EachRecord(func(kr *kgo.Record) {
					got++
					sid, rest, err := header.DecodeID(kr.Value)
					if err != nil {
						t.Fatalf("value % x: pkg/sr reads no Confluent header: %v", kr.Value, err)
					}
					var index []int
					if schema.Type == format.TypeProtobuf {
						if index, rest, err = header.DecodeIndex(rest, 0); err != nil {
							t.Fatalf("value % x: pkg/sr reads no message index: %v", kr.Value, err)
						}
					}
					s, ok := fetched[sid]
					if !ok {
						if s, err = reg.SchemaByID(ctx, sid); err != nil {
							t.Fatalf("pkg/sr fetching schema %d from central's registry: %v", sid, err)
						}
						fetched[sid] = s
					}
					r := c.decode(t, s, index, rest)
					if r.device != string(kr.Key) {
						t.Errorf("record keyed %s decodes to device %s", kr.Key, r.device)
					}
					if r.seq != last[r.device]+1 {
						t.Fatalf("device %s: seq %d after %d", r.device, r.seq, last[r.device])
					}
					var d int
					fmt.Sscanf(r.device, "dev-%d", &d)
					if want := 20 + float64(d) + float64(r.seq)/8; r.temp != want {
						t.Errorf("device %s seq %d: temp %v, sent %v", r.device, r.seq, r.temp, want)
					}
					last[r.device] = r.seq
				})
			}
			if got != devs*perDevice {
				t.Fatalf("Kafka holds %d values, want %d", got, devs*perDevice)
			}
			if len(fetched) != 1 || fetched[int(schema.ID)].Schema != schema.Text {
				t.Errorf("pkg/sr fetched %v, want the stream's schema under id %d", fetched, schema.ID)
			}
		})
	}
}

// encodeProto encodes plant.v1.Reading by hand, as a device's firmware would.
func encodeProto(_ *testing.T, r sentReading) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, r.device)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.seq))
	b = protowire.AppendTag(b, 3, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(r.temp))
}

// decodeProto compiles the registry's .proto text and decodes the message at the index path.
func decodeProto(t *testing.T, s sr.Schema, index []int, payload []byte) sentReading {
	t.Helper()
	if s.Type != sr.TypeProtobuf {
		t.Fatalf("registry serves schema type %v, want PROTOBUF", s.Type)
	}
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"registry.proto": s.Schema})})}
	files, err := c.Compile(context.Background(), "registry.proto")
	if err != nil {
		t.Fatalf("compile the registry's schema: %v", err)
	}
	var md protoreflect.MessageDescriptor
	ms := files[0].Messages()
	for _, i := range index {
		md = ms.Get(i)
		ms = md.Messages()
	}
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(payload, m); err != nil {
		t.Fatalf("dynamicpb %s: %v", md.FullName(), err)
	}
	f := md.Fields()
	return sentReading{m.Get(f.ByName("device")).String(), int64(m.Get(f.ByName("seq")).Uint()),
		m.Get(f.ByName("temp")).Float()}
}

var readingAvro = avro.MustParse(`{"type":"record","name":"Reading","namespace":"plant.v1","fields":[
	{"name":"device","type":"string"},{"name":"seq","type":"long"},{"name":"temp","type":"double"},
	{"name":"note","type":["null","string"],"default":null}]}`)

// encodeAvro encodes a datum as a device would, with its own copy of the schema.
func encodeAvro(t *testing.T, r sentReading) []byte {
	b, err := avro.Marshal(readingAvro, map[string]any{"device": r.device, "seq": r.seq, "temp": r.temp, "note": nil})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeAvro decodes a datum with the schema text the registry returned.
func decodeAvro(t *testing.T, s sr.Schema, _ []int, payload []byte) sentReading {
	t.Helper()
	if s.Type != sr.TypeAvro {
		t.Fatalf("registry serves schema type %v, want AVRO", s.Type)
	}
	schema, err := avro.Parse(s.Schema)
	if err != nil {
		t.Fatalf("parse the registry's schema: %v", err)
	}
	var v struct {
		Device string  `avro:"device"`
		Seq    int64   `avro:"seq"`
		Temp   float64 `avro:"temp"`
	}
	if err := avro.Unmarshal(schema, payload, &v); err != nil {
		t.Fatalf("hamba/avro: %v", err)
	}
	return sentReading{v.Device, v.Seq, v.Temp}
}

// streamRecords is how many records central's stream holds, from GET /v1/streams.
func streamRecords(t *testing.T, url, stream string) int {
	t.Helper()
	resp, err := http.Get(url + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var streams []consume.StreamInfo
	if err := json.NewDecoder(resp.Body).Decode(&streams); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range streams {
		if s.Name == stream {
			for _, p := range s.Partitions {
				n += int(p.End - p.Start)
			}
		}
	}
	return n
}
