package firmwaresim

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Reading is one sensor reading as a device sends it. Its JSON form is the payload contract that
// verification reads back:
//
//	{"device":"dev-0001","seq":1,"ts":1718000000000,"temperature":21.53,"humidity":45.2,
//	 "pressure":1013.25,"vibration":0.012,"battery":97.3}
//
// Faulty publishes (see [Faults]) add "fault":"<kind>" and carry seq 0, so they sit outside the
// per-device sequence and never look like a gap.
type Reading struct {
	Device      string  `json:"device"`
	Seq         uint64  `json:"seq"`
	TS          int64   `json:"ts"` // device clock, unix milliseconds (includes any simulated skew)
	Temperature float64 `json:"temperature"`
	Humidity    float64 `json:"humidity"`
	Pressure    float64 `json:"pressure"`
	Vibration   float64 `json:"vibration"`
	Battery     float64 `json:"battery"`
	Fault       string  `json:"fault,omitempty"`
	Pad         string  `json:"pad,omitempty"`
}

// AppendJSON appends the reading's JSON encoding to b. It writes the fields by hand, rounded to
// what real sensors resolve, because encoding/json prints float64 at full precision (readings would
// grow to ~200 bytes) and reflection dominates the publish loop at high rates.
func (r *Reading) AppendJSON(b []byte) []byte {
	b = append(b, `{"device":`...)
	b = strconv.AppendQuote(b, r.Device)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, r.TS, 10)
	b = append(b, `,"temperature":`...)
	b = strconv.AppendFloat(b, r.Temperature, 'f', 2, 64)
	b = append(b, `,"humidity":`...)
	b = strconv.AppendFloat(b, r.Humidity, 'f', 1, 64)
	b = append(b, `,"pressure":`...)
	b = strconv.AppendFloat(b, r.Pressure, 'f', 2, 64)
	b = append(b, `,"vibration":`...)
	b = strconv.AppendFloat(b, r.Vibration, 'f', 4, 64)
	b = append(b, `,"battery":`...)
	b = strconv.AppendFloat(b, r.Battery, 'f', 1, 64)
	if r.Fault != "" {
		b = append(b, `,"fault":`...)
		b = strconv.AppendQuote(b, r.Fault)
	}
	if r.Pad != "" {
		b = append(b, `,"pad":`...)
		b = strconv.AppendQuote(b, r.Pad)
	}
	return append(b, '}')
}

// padTo returns the reading encoded and padded with a "pad" field so the payload is at least size
// bytes; readings already that large are returned unpadded.
func (r *Reading) padTo(buf []byte, size int) []byte {
	r.Pad = ""
	b := r.AppendJSON(buf[:0])
	const padOverhead = len(`,"pad":""`)
	if missing := size - len(b) - padOverhead; missing > 0 {
		r.Pad = padString(missing)
		b = r.AppendJSON(b[:0])
		r.Pad = ""
	}
	return b
}

func padString(n int) string {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'x'
	}
	return string(p)
}

// Signal produces the readings of one simulated device. Values are a pure function of
// (fleet seed, device id, seq, device time), so two runs with the same seed and timestamps produce
// the same readings and a failing verification can be replayed.
//
// Each device gets its own climate: a daily temperature cycle peaking mid-afternoon (humidity moves
// against it), a multi-day pressure swing, slow sensor drift, Gaussian noise, rare spikes on
// temperature and vibration, and a battery that drains from a per-device starting charge.
type Signal struct {
	device string
	seed   uint64
	epoch  time.Time // drift and battery drain are measured from here

	tempBase, tempAmp, tempDriftPerDay float64
	humBase, humAmp                    float64
	pressBase, pressPhase              float64
	vibBase                            float64
	batteryStart, drainPerHour         float64
	phaseHours                         float64 // local solar-time offset, so devices do not peak together
}

// Spike probabilities per reading: rare enough that a chart shows them as events.
const (
	tempSpikeProbability      = 0.001
	vibrationSpikeProbability = 0.002
)

// NewSignal returns the signal of device id in a fleet seeded with seed. epoch is the time at
// which drift and battery drain start (usually the start of the run).
func NewSignal(seed int64, id string, epoch time.Time) *Signal {
	h := fnv.New64a()
	h.Write([]byte(id))
	devSeed := h.Sum64() ^ uint64(seed)*0x9e3779b97f4a7c15
	rng := rand.New(rand.NewPCG(devSeed, 0x5eed))
	return &Signal{
		device:          id,
		seed:            devSeed,
		epoch:           epoch,
		tempBase:        18 + 8*rng.Float64(),
		tempAmp:         2 + 4*rng.Float64(),
		tempDriftPerDay: 0.2 * (rng.Float64() - 0.5),
		humBase:         35 + 30*rng.Float64(),
		humAmp:          5 + 10*rng.Float64(),
		pressBase:       1005 + 15*rng.Float64(),
		pressPhase:      2 * math.Pi * rng.Float64(),
		vibBase:         0.01 + 0.04*rng.Float64(),
		batteryStart:    85 + 15*rng.Float64(),
		drainPerHour:    0.05 + 0.45*rng.Float64(),
		phaseHours:      2 * (rng.Float64() - 0.5),
	}
}

// Reading returns reading seq taken at device time t.
func (s *Signal) Reading(seq uint64, t time.Time) Reading {
	// A fresh generator per (device, seq) keeps each reading independent of how many readings came
	// before it, which is what makes the signal a pure function.
	rng := rand.New(rand.NewPCG(s.seed, seq))
	utc := t.UTC()
	hourOfDay := float64(utc.Hour()) + float64(utc.Minute())/60 + float64(utc.Second())/3600 + s.phaseHours
	daily := math.Sin(2 * math.Pi * (hourOfDay - 9) / 24) // peaks at 15:00 local
	days := t.Sub(s.epoch).Hours() / 24
	hours := days * 24

	temp := s.tempBase + s.tempAmp*daily + s.tempDriftPerDay*days + 0.15*rng.NormFloat64()
	if rng.Float64() < tempSpikeProbability {
		temp += 8 + 7*rng.Float64()
	}
	hum := clamp(s.humBase-s.humAmp*daily+0.8*rng.NormFloat64(), 0, 100)
	press := s.pressBase + 4*math.Sin(2*math.Pi*days/3+s.pressPhase) + 0.3*rng.NormFloat64()
	vib := s.vibBase * (1 + 0.5*math.Abs(rng.NormFloat64()))
	if rng.Float64() < vibrationSpikeProbability {
		vib *= 10 + 30*rng.Float64()
	}
	battery := clamp(s.batteryStart-s.drainPerHour*max(hours, 0), 0, 100)

	return Reading{
		Device:      s.device,
		Seq:         seq,
		TS:          t.UnixMilli(),
		Temperature: temp,
		Humidity:    hum,
		Pressure:    press,
		Vibration:   vib,
		Battery:     battery,
	}
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }
