package status

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
)

// The plots are drawn here, as SVG, so the page needs no chart library: a polyline per series
// over the history window, scaled to the largest value shown. The viewBox scales to any width.
const (
	plotWidth   = 600
	plotHeight  = 150
	plotLeft    = 48 // room for the y labels
	plotBottom  = 18 // room for the time labels
	plotTop     = 8
	plotRight   = 6
	innerWidth  = plotWidth - plotLeft - plotRight
	innerHeight = plotHeight - plotTop - plotBottom
)

type series struct {
	name, label, color string
	value              func(Sample) float64
}

// plots are the charts GET /status/plot.svg draws, by its ?chart= name.
var plots = map[string][]series{
	"rates": {
		{"readings", "readings/s in", "#2563eb", func(s Sample) float64 { return float64(s.Readings) }},
		{"forwarded", "forwarded/s", "#16a34a", func(s Sample) float64 { return float64(s.Forwarded) }},
	},
	"backlog": {
		{"behind", "records behind", "#d97706", func(s Sample) float64 { return float64(s.Behind) }},
	},
}

// minPlotSpan is the shortest time a plot spans, so a young history is not stretched thin.
const minPlotSpan = time.Minute

// plotSVG draws the chart's series from the oldest sample (at most window ago, at least
// minPlotSpan) to now: a fresh edge's first minutes fill the plot instead of its right edge.
func plotSVG(chart []series, samples []Sample, now time.Time, window time.Duration) []byte {
	span := window
	if len(samples) > 0 {
		span = min(window, max(now.Sub(time.Unix(samples[0].Time, 0)), minPlotSpan))
	}
	start := now.Add(-span).Unix()
	var top float64
	for _, s := range samples {
		for _, sr := range chart {
			top = max(top, sr.value(s))
		}
	}
	top = niceCeil(top)
	x := func(t int64) float64 {
		return plotLeft + float64(t-start)/span.Seconds()*innerWidth
	}
	y := func(v float64) float64 {
		return plotTop + innerHeight - v/top*innerHeight
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" class="plot" role="img" data-points="%d">`,
		plotWidth, plotHeight, len(samples))
	// Grid: the baseline, the top value and half of it.
	for _, frac := range []float64{0, 0.5, 1} {
		yy := y(top * frac)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d4d4d8" stroke-width="1"/>`, plotLeft, yy, plotWidth-plotRight, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11" fill="#52525b">%s</text>`, plotLeft-4, yy+4, shortNumber(top*frac))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#52525b">%s</text>`, plotLeft, plotHeight-4, shortDuration(span))
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11" fill="#52525b">%s</text>`, plotLeft+innerWidth/2.0, plotHeight-4, shortDuration(span/2))
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" font-size="11" fill="#52525b">now</text>`, plotWidth-plotRight, plotHeight-4)
	for _, sr := range chart {
		fmt.Fprintf(&b, `<polyline data-series="%s" fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" points="`, sr.name, sr.color)
		n := 0
		for _, s := range samples {
			if s.Time < start {
				continue
			}
			if n > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatFloat(x(s.Time), 'f', 1, 64))
			b.WriteByte(',')
			b.WriteString(strconv.FormatFloat(y(sr.value(s)), 'f', 1, 64))
			n++
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	return b.Bytes()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the axis reads well; at least 1.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func shortNumber(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// shortDuration labels the plot's time axis: "-1h", "-30m", "-90s".
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour < time.Minute:
		return "-" + strconv.Itoa(int(d/time.Hour)) + "h"
	case d >= 3*time.Minute:
		return "-" + strconv.Itoa(int(d.Round(time.Minute)/time.Minute)) + "m"
	}
	return "-" + strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s"
}
