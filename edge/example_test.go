package edge_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/edge"
)

// A device publishes one reading with QoS 1; once its PUBACK arrives the reading is in the log.
func Example() {
	dir, _ := os.MkdirTemp("", "tributary-edge-example")
	defer os.RemoveAll(dir)

	// Port 0 picks a free loopback port. With every listener on loopback, clients without
	// credentials are accepted, each publishing under its own client id (anonymous_publish: own).
	agent, err := edge.New(edge.Config{DataDir: dir, MQTT: edge.MQTTConfig{Listen: "127.0.0.1:0"}})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()

	device := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + agent.MQTTAddr()).SetClientID("thermo-7"))
	if tok := device.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		panic(fmt.Sprint("connect: ", tok.Error()))
	}
	// The PUBACK is sent only after the group commit that holds the reading is on disk.
	tok := device.Publish("devices/thermo-7/readings", 1, false, `{"seq":1,"temperature":21.5}`)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		panic(fmt.Sprint("publish: ", tok.Error()))
	}
	device.Disconnect(100)

	// The reading is in the default stream, keyed by its device, so in that device's partition.
	readings, err := agent.Log().Stream("readings")
	if err != nil {
		panic(err)
	}
	p := readings.Partition(readings.PartitionFor([]byte("thermo-7")))
	r := p.NewReader(0, nil)
	for {
		e, err := r.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Printf("offset %d, device %s: %s\n", e.Offset, e.Key, e.Value)
	}

	stop() // Run drains pending acks, closes the broker, then the log
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
	// offset 0, device thermo-7: {"seq":1,"temperature":21.5}
}
