package status

import (
	"context"
	"net/http"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/edge"
)

// edgeWithPage starts a real edge agent on loopback with the status page mounted at / of its
// HTTP listener, and its sampler running.
func edgeWithPage(t *testing.T, cfg Config) (*edge.Agent, *Page) {
	t.Helper()
	a, err := edge.New(edge.Config{DataDir: t.TempDir(), EdgeID: "gw-test",
		MQTT: edge.MQTTConfig{Listen: "127.0.0.1:0"}, HTTPListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.EdgeID, cfg.Clients, cfg.Log = "gw-test", a, a.Log()
	p, err := New(cfg)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	a.HandleHTTP("/", p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("stop: %v", err)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !a.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("edge not ready after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return a, p
}

// device connects a real MQTT client to the edge (anonymous: the edge listens on loopback).
func device(t *testing.T, a *edge.Agent, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID(id).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func publish(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func get(t *testing.T, url string, mod func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(req)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var noRedirect = &http.Client{Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
