package firmwaresim_test

import (
	"fmt"
	"strings"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
)

// Verify a merged stream in which device dev-0001's reading 2 was delivered twice and reading 3
// never arrived.
func ExampleVerify() {
	in := strings.Join([]string{
		`{"stream":"readings","partition":0,"offset":0,"key":"dev-0001","timestamp":1718000000040,"value":{"device":"dev-0001","seq":1,"ts":1718000000000}}`,
		`{"stream":"readings","partition":0,"offset":1,"key":"dev-0001","timestamp":1718000001040,"value":{"device":"dev-0001","seq":2,"ts":1718000001000}}`,
		`{"stream":"readings","partition":0,"offset":2,"key":"dev-0001","timestamp":1718000001050,"value":{"device":"dev-0001","seq":2,"ts":1718000001000}}`,
		`{"stream":"readings","partition":0,"offset":3,"key":"dev-0001","timestamp":1718000003040,"value":{"device":"dev-0001","seq":4,"ts":1718000003000}}`,
	}, "\n")
	v, err := firmwaresim.Verify(strings.NewReader(in), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("received", v.Received, "lost", v.Lost, "duplicated", v.Duplicated, "out of order", v.OutOfOrder)
	fmt.Println(v.Err())
	// Output:
	// received 4 lost 1 duplicated 1 out of order 0
	// verification failed: 1 lost, 1 duplicated, 0 out of order, 0 unreadable lines, 0 Sparkplug metrics with unresolved aliases
}

// The payload a device publishes: the documented reading shape.
func ExampleReading_AppendJSON() {
	r := firmwaresim.Reading{Device: "dev-0001", Seq: 1, TS: 1718000000000, Temperature: 21.534,
		Humidity: 45.21, Pressure: 1013.25, Vibration: 0.0123, Battery: 97.31}
	fmt.Println(string(r.AppendJSON(nil)))
	// Output:
	// {"device":"dev-0001","seq":1,"ts":1718000000000,"temperature":21.53,"humidity":45.2,"pressure":1013.25,"vibration":0.0123,"battery":97.3}
}
