package devices_test

import (
	"fmt"

	"github.com/tributary-iot/tributary/devices"
)

func ExampleMapper_Map() {
	m, err := devices.NewMapper([]devices.Rule{
		{Pattern: "plant1/{device}/telemetry", Stream: "readings"},
		{Pattern: devices.DefaultPattern},
	})
	if err != nil {
		panic(err)
	}
	for _, topic := range []string{
		"plant1/press-3/telemetry",
		"devices/boiler-7/temperature/probe2",
		"devices/boiler-7/deadletter",
		"plant2/press-3/telemetry",
	} {
		route, err := m.Map(topic)
		if err != nil {
			fmt.Printf("%-36s refused: %s\n", topic, devices.ReasonOf(err))
			continue
		}
		fmt.Printf("%-36s stream=%s key=%s\n", topic, route.Stream, route.Key)
	}
	// Output:
	// plant1/press-3/telemetry             stream=readings key=press-3
	// devices/boiler-7/temperature/probe2  stream=temperature key=boiler-7
	// devices/boiler-7/deadletter          refused: reserved_stream
	// plant2/press-3/telemetry             refused: no_route
}

func ExampleValidate() {
	policy := devices.Policy{JSON: true, MaxPayloadBytes: 1024}
	for _, payload := range []string{
		`{"seq":41,"ts":1718000000123,"temp":21.5}`,
		`{"seq":42,"time":"2024-06-10T06:13:20Z","temp":21.6}`,
		`temp=21.7`,
		`{"seq":44,"ts":"yesterday"}`,
	} {
		r, reason := devices.Validate([]byte(payload), policy)
		if reason != devices.ReasonNone {
			fmt.Println("dead-letter:", reason)
			continue
		}
		fmt.Println(r.ContentType, r.DeviceTime.Format("2006-01-02T15:04:05.000Z07:00"))
	}
	// Output:
	// application/json 2024-06-10T06:13:20.123Z
	// application/json 2024-06-10T06:13:20.000Z
	// dead-letter: not_json
	// dead-letter: bad_device_time
}
