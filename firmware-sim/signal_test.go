package firmwaresim

import (
	"math"
	"testing"
	"time"
)

func TestSignalIsDeterministicAndRealistic(t *testing.T) {
	epoch := time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)
	a, b := NewSignal(42, "dev-0001", epoch), NewSignal(42, "dev-0001", epoch)
	other := NewSignal(43, "dev-0001", epoch)
	at := epoch.Add(90 * time.Minute)
	if a.Reading(7, at) != b.Reading(7, at) {
		t.Fatal("same seed, device, seq and time gave different readings")
	}
	if a.Reading(7, at) == other.Reading(7, at) {
		t.Fatal("a different seed gave the same reading")
	}

	// A day and a half at one reading a minute: the daily cycle shows in hourly means, the
	// battery drains, values stay in physical ranges, spikes (jumps of over 5 degrees) are rare.
	var hourly [24]float64
	lastBattery, lastTemp := 101.0, math.NaN()
	spikes := 0
	const n = 36 * 60
	for i := range n {
		ts := epoch.Add(time.Duration(i) * time.Minute)
		r := a.Reading(uint64(i+1), ts)
		if r.Humidity < 0 || r.Humidity > 100 || r.Battery < 0 || r.Battery > 100 || r.Vibration < 0 || r.Pressure < 980 || r.Pressure > 1040 {
			t.Fatalf("reading out of range: %+v", r)
		}
		if r.Battery > lastBattery {
			t.Fatalf("battery went up from %.2f to %.2f", lastBattery, r.Battery)
		}
		lastBattery = r.Battery
		if r.Temperature-lastTemp > 5 {
			spikes++
		}
		lastTemp = r.Temperature
		if i < 24*60 {
			hourly[ts.Hour()] += r.Temperature / 60
		}
	}
	warmHour, coldHour := 0, 0
	for h := range hourly {
		if hourly[h] > hourly[warmHour] {
			warmHour = h
		}
		if hourly[h] < hourly[coldHour] {
			coldHour = h
		}
	}
	if hourly[warmHour]-hourly[coldHour] < 3 || warmHour < 12 || warmHour > 18 || coldHour < 1 || coldHour > 6 {
		t.Errorf("no daily cycle: warmest %.1f at %d:00, coldest %.1f at %d:00", hourly[warmHour], warmHour, hourly[coldHour], coldHour)
	}
	if first := a.Reading(1, epoch).Battery; first-lastBattery < 1 {
		t.Errorf("battery drained only %.2f%% in 36h", first-lastBattery)
	}
	if spikes == 0 || spikes > n/100 {
		t.Errorf("%d temperature spikes in %d readings: want a few", spikes, n)
	}
}
