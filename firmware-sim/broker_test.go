package firmwaresim

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	// mochi is the broker the edge agent embeds; testing against it exercises the same MQTT
	// implementation the simulator will meet in production.
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// startBroker runs a mochi broker with allow-all auth on a free loopback port and returns its URL.
func startBroker(tb testing.TB) string {
	tb.Helper()
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		tb.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		tb.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return "tcp://" + tcp.Address()
}

// received is what a subscriber saw, in arrival order.
type received struct {
	mu       sync.Mutex
	messages []message
}

type message struct {
	topic   string
	payload []byte
}

func (r *received) snapshot() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.messages...)
}

// subscribe connects a real paho client subscribed to filter at QoS 1.
func subscribe(tb testing.TB, broker, filter string) *received {
	tb.Helper()
	rec := &received{}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID("test-subscriber").
		SetOrderMatters(true).SetCleanSession(true)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		rec.mu.Lock()
		rec.messages = append(rec.messages, message{m.Topic(), append([]byte(nil), m.Payload()...)})
		rec.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatalf("subscribe: %v", tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return rec
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, cond func() bool) bool {
	tb.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func decodeReading(tb testing.TB, payload []byte) Reading {
	tb.Helper()
	var r Reading
	dec := json.NewDecoder(bytesReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("payload %q is not a reading: %v", payload, err)
	}
	return r
}
