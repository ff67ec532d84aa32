package firmwaresim

import (
	"bytes"
	"encoding/json"
)

// SparkplugVerification counts what verification saw of Sparkplug B messages, which a Tributary
// edge stores as JSON with names resolved (see devices/sparkplug.Message). DDATA carrying the
// [SparkplugSeqMetric] metric are checked as readings like any others.
type SparkplugVerification struct {
	Births uint64 `json:"births"` // NBIRTH and DBIRTH
	Deaths uint64 `json:"deaths"` // NDEATH and DDEATH, the wills of dropped connections included
	Data   uint64 `json:"data"`   // NDATA and DDATA
	// SeqGaps counts the edge's sparkplug_seq gap markers and MissingMessages the messages they
	// say never reached the edge.
	SeqGaps         uint64 `json:"seq_gaps"`
	MissingMessages uint64 `json:"missing_messages"`
	// UnresolvedAliases counts data metrics stored without a name: the edge had no birth for
	// their alias. A simulator run through a healthy edge has none.
	UnresolvedAliases uint64 `json:"unresolved_aliases"`
}

// sparkplugRecord is the stored JSON of a Sparkplug message or of a seq gap marker.
type sparkplugRecord struct {
	Type      string `json:"type"`
	Group     string `json:"group"`
	Node      string `json:"node"`
	Device    string `json:"device"`
	Timestamp int64  `json:"timestamp"`
	Metrics   []struct {
		Name      string          `json:"name"`
		Alias     *uint64         `json:"alias"`
		Value     json.RawMessage `json:"value"`
		Timestamp int64           `json:"timestamp"`
	} `json:"metrics"`
	Gap     string `json:"gap"`
	Missing uint64 `json:"missing"`
}

// sparkplugReading reads a record value as Sparkplug: ok reports that it was one (a message or a
// gap marker, counted in sv), and reading that it is a DDATA/NDATA reading, returned in p.
func sparkplugReading(value json.RawMessage, sv *SparkplugVerification) (p payloadFields, reading, ok bool) {
	// Readings of devices/<id>/ topics have neither field: they skip the second decode.
	if !bytes.Contains(value, []byte(`"metrics"`)) && !bytes.Contains(value, []byte(`"gap"`)) {
		return p, false, false
	}
	var r sparkplugRecord
	if json.Unmarshal(value, &r) != nil {
		return p, false, false
	}
	if r.Gap == "sparkplug_seq" {
		sv.SeqGaps++
		sv.MissingMessages += r.Missing
		return p, false, true
	}
	switch r.Type {
	case "NBIRTH", "DBIRTH":
		sv.Births++
		return p, false, true
	case "NDEATH", "DDEATH":
		sv.Deaths++
		return p, false, true
	case "NDATA", "DDATA":
		sv.Data++
	default:
		return p, false, false
	}
	p.Device = r.Group + "/" + r.Node
	if r.Device != "" {
		p.Device += "/" + r.Device
	}
	p.TS = r.Timestamp
	for _, m := range r.Metrics {
		if m.Name == "" && m.Alias != nil {
			sv.UnresolvedAliases++
		}
		if m.Name == SparkplugSeqMetric && json.Unmarshal(m.Value, &p.Seq) == nil {
			if m.Timestamp != 0 {
				p.TS = m.Timestamp
			}
			reading = true
		}
	}
	return p, reading, true
}
