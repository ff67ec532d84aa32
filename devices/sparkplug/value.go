package sparkplug

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"

	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
)

// maxDepth bounds how deep templates, data sets and property sets nest in what is rendered: the
// protobuf decoder has its own limit, this one keeps a hostile payload from costing a deep walk.
const maxDepth = 16

// TypeName is the specification's name of a DataType value, or "Unknown(n)".
func TypeName(t uint32) string {
	if name, ok := pb.DataType_name[int32(t)]; ok && t <= math.MaxInt32 {
		return name
	}
	return "Unknown(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// jsonFloat keeps NaN and the infinities, which JSON numbers cannot hold, as strings.
func jsonFloat(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return f
}

// intValue reads the 32-bit field by type: Sparkplug 3.0 carries Int8, Int16 and Int32 in the
// uint32 int_value as two's complement, so the declared type decides the sign.
func intValue(t pb.DataType, v uint32) any {
	switch t {
	case pb.DataType_Int8:
		return int8(v)
	case pb.DataType_Int16:
		return int16(v)
	case pb.DataType_Int32:
		return int32(v)
	}
	return v
}

func longValue(t pb.DataType, v uint64) any {
	if t == pb.DataType_Int64 {
		return int64(v)
	}
	return v // UInt64, DateTime (ms since the epoch), or an undeclared type
}

// metricValue renders a metric's value for its type (the metric's own, else its birth's).
func metricValue(t pb.DataType, m *pb.Payload_Metric, depth int) any {
	switch v := m.GetValue().(type) {
	case *pb.Payload_Metric_IntValue:
		return intValue(t, v.IntValue)
	case *pb.Payload_Metric_LongValue:
		return longValue(t, v.LongValue)
	case *pb.Payload_Metric_FloatValue:
		return jsonFloat(float64(v.FloatValue))
	case *pb.Payload_Metric_DoubleValue:
		return jsonFloat(v.DoubleValue)
	case *pb.Payload_Metric_BooleanValue:
		return v.BooleanValue
	case *pb.Payload_Metric_StringValue:
		return v.StringValue
	case *pb.Payload_Metric_BytesValue:
		return bytesValue(t, v.BytesValue)
	case *pb.Payload_Metric_DatasetValue:
		return dataSetValue(v.DatasetValue, depth)
	case *pb.Payload_Metric_TemplateValue:
		return templateValue(v.TemplateValue, depth)
	case *pb.Payload_Metric_ExtensionValue:
		return map[string]any{"extension": true}
	}
	return nil
}

// bytesValue decodes the array types, which Sparkplug 3.0 packs little-endian into bytes_value;
// Bytes, File and anything that does not parse stay base64.
func bytesValue(t pb.DataType, b []byte) any {
	fixed := func(size int, read func([]byte) any) any {
		if len(b)%size != 0 {
			return base64.StdEncoding.EncodeToString(b)
		}
		out := make([]any, 0, len(b)/size)
		for i := 0; i < len(b); i += size {
			out = append(out, read(b[i:i+size]))
		}
		return out
	}
	le := binary.LittleEndian
	switch t {
	case pb.DataType_Int8Array:
		return fixed(1, func(p []byte) any { return int8(p[0]) })
	case pb.DataType_UInt8Array:
		return fixed(1, func(p []byte) any { return p[0] })
	case pb.DataType_Int16Array:
		return fixed(2, func(p []byte) any { return int16(le.Uint16(p)) })
	case pb.DataType_UInt16Array:
		return fixed(2, func(p []byte) any { return le.Uint16(p) })
	case pb.DataType_Int32Array:
		return fixed(4, func(p []byte) any { return int32(le.Uint32(p)) })
	case pb.DataType_UInt32Array:
		return fixed(4, func(p []byte) any { return le.Uint32(p) })
	case pb.DataType_Int64Array, pb.DataType_DateTimeArray:
		return fixed(8, func(p []byte) any { return int64(le.Uint64(p)) })
	case pb.DataType_UInt64Array:
		return fixed(8, func(p []byte) any { return le.Uint64(p) })
	case pb.DataType_FloatArray:
		return fixed(4, func(p []byte) any { return jsonFloat(float64(math.Float32frombits(le.Uint32(p)))) })
	case pb.DataType_DoubleArray:
		return fixed(8, func(p []byte) any { return jsonFloat(math.Float64frombits(le.Uint64(p))) })
	case pb.DataType_StringArray:
		// NUL-terminated UTF-8 strings, one after another.
		out := []any{}
		start := 0
		for i, c := range b {
			if c == 0 {
				out = append(out, string(b[start:i]))
				start = i + 1
			}
		}
		if start != len(b) {
			return base64.StdEncoding.EncodeToString(b)
		}
		return out
	}
	return base64.StdEncoding.EncodeToString(b)
}

func dataSetValue(ds *pb.Payload_DataSet, depth int) any {
	if depth >= maxDepth {
		return nil
	}
	types := make([]string, len(ds.GetTypes()))
	for i, t := range ds.GetTypes() {
		types[i] = TypeName(t)
	}
	rows := make([][]any, 0, len(ds.GetRows()))
	for _, r := range ds.GetRows() {
		row := make([]any, 0, len(r.GetElements()))
		for i, e := range r.GetElements() {
			var t pb.DataType
			if i < len(ds.GetTypes()) {
				t = pb.DataType(ds.GetTypes()[i])
			}
			row = append(row, dataSetElement(t, e))
		}
		rows = append(rows, row)
	}
	return map[string]any{"columns": ds.GetColumns(), "types": types, "rows": rows}
}

func dataSetElement(t pb.DataType, e *pb.Payload_DataSet_DataSetValue) any {
	switch v := e.GetValue().(type) {
	case *pb.Payload_DataSet_DataSetValue_IntValue:
		return intValue(t, v.IntValue)
	case *pb.Payload_DataSet_DataSetValue_LongValue:
		return longValue(t, v.LongValue)
	case *pb.Payload_DataSet_DataSetValue_FloatValue:
		return jsonFloat(float64(v.FloatValue))
	case *pb.Payload_DataSet_DataSetValue_DoubleValue:
		return jsonFloat(v.DoubleValue)
	case *pb.Payload_DataSet_DataSetValue_BooleanValue:
		return v.BooleanValue
	case *pb.Payload_DataSet_DataSetValue_StringValue:
		return v.StringValue
	}
	return nil
}

func templateValue(tp *pb.Payload_Template, depth int) any {
	if depth >= maxDepth {
		return nil
	}
	out := map[string]any{}
	if tp.Version != nil {
		out["version"] = tp.GetVersion()
	}
	if tp.TemplateRef != nil {
		out["template_ref"] = tp.GetTemplateRef()
	}
	if tp.GetIsDefinition() {
		out["is_definition"] = true
	}
	metrics := make([]Metric, 0, len(tp.GetMetrics()))
	for _, m := range tp.GetMetrics() {
		metrics = append(metrics, renderMetric(m, m.GetName(), pb.DataType(m.GetDatatype()), depth+1))
	}
	out["metrics"] = metrics
	if len(tp.GetParameters()) > 0 {
		params := make([]map[string]any, 0, len(tp.GetParameters()))
		for _, p := range tp.GetParameters() {
			params = append(params, map[string]any{"name": p.GetName(), "type": TypeName(p.GetType()), "value": parameterValue(pb.DataType(p.GetType()), p)})
		}
		out["parameters"] = params
	}
	return out
}

func parameterValue(t pb.DataType, p *pb.Payload_Template_Parameter) any {
	switch v := p.GetValue().(type) {
	case *pb.Payload_Template_Parameter_IntValue:
		return intValue(t, v.IntValue)
	case *pb.Payload_Template_Parameter_LongValue:
		return longValue(t, v.LongValue)
	case *pb.Payload_Template_Parameter_FloatValue:
		return jsonFloat(float64(v.FloatValue))
	case *pb.Payload_Template_Parameter_DoubleValue:
		return jsonFloat(v.DoubleValue)
	case *pb.Payload_Template_Parameter_BooleanValue:
		return v.BooleanValue
	case *pb.Payload_Template_Parameter_StringValue:
		return v.StringValue
	}
	return nil
}

func propertySetValue(ps *pb.Payload_PropertySet, depth int) map[string]any {
	if ps == nil || depth >= maxDepth {
		return nil
	}
	out := make(map[string]any, len(ps.GetKeys()))
	for i, k := range ps.GetKeys() {
		if i >= len(ps.GetValues()) {
			break
		}
		out[k] = propertyValue(ps.GetValues()[i], depth+1)
	}
	return out
}

func propertyValue(pv *pb.Payload_PropertyValue, depth int) any {
	if pv.GetIsNull() {
		return nil
	}
	t := pb.DataType(pv.GetType())
	switch v := pv.GetValue().(type) {
	case *pb.Payload_PropertyValue_IntValue:
		return intValue(t, v.IntValue)
	case *pb.Payload_PropertyValue_LongValue:
		return longValue(t, v.LongValue)
	case *pb.Payload_PropertyValue_FloatValue:
		return jsonFloat(float64(v.FloatValue))
	case *pb.Payload_PropertyValue_DoubleValue:
		return jsonFloat(v.DoubleValue)
	case *pb.Payload_PropertyValue_BooleanValue:
		return v.BooleanValue
	case *pb.Payload_PropertyValue_StringValue:
		return v.StringValue
	case *pb.Payload_PropertyValue_PropertysetValue:
		return propertySetValue(v.PropertysetValue, depth)
	case *pb.Payload_PropertyValue_PropertysetsValue:
		list := []any{}
		for _, ps := range v.PropertysetsValue.GetPropertyset() {
			list = append(list, propertySetValue(ps, depth+1))
		}
		return list
	}
	return nil
}
