package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Colours of the systems in the plot.
var plotColors = map[string]color.RGBA{
	SystemCeiling: {0x80, 0x80, 0x80, 0xff},
	SystemRecipes: {0xe0, 0x8a, 0x00, 0xff},
	SystemNaive:   {0xc0, 0x20, 0x20, 0xff},
	SystemBaton:   {0x1f, 0x5f, 0xd0, 0xff},
}

const (
	plotW, plotH                       = 920, 520
	padLeft, padRight, padTop, padBott = 70, 190, 50, 55
)

// WritePlot draws tasks per second against consumers for every measured
// system as a PNG: consumer counts evenly spaced on the x axis, a log
// scale on the y axis.
func (r *Report) WritePlot(w io.Writer) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	ns := r.Settings.Consumers
	if len(ns) == 0 || len(r.Results) == 0 {
		return fmt.Errorf("plot: nothing measured")
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, res := range r.Results {
		if res.TasksPerS > 0 {
			lo, hi = math.Min(lo, res.TasksPerS), math.Max(hi, res.TasksPerS)
		}
	}
	if math.IsInf(lo, 0) {
		return fmt.Errorf("plot: no throughput measured")
	}
	dLo, dHi := math.Floor(math.Log10(lo)-0.02), math.Ceil(math.Log10(hi)+0.02)
	if dHi == dLo {
		dHi++
	}
	x0, x1 := float64(padLeft), float64(plotW-padRight)
	y0, y1 := float64(plotH-padBott), float64(padTop)
	xOf := func(i int) float64 {
		if len(ns) == 1 {
			return (x0 + x1) / 2
		}
		return x0 + 30 + float64(i)*(x1-x0-60)/float64(len(ns)-1)
	}
	yOf := func(v float64) float64 { return y0 + (math.Log10(v)-dLo)/(dHi-dLo)*(y1-y0) }

	grid := color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	axis := color.RGBA{0x30, 0x30, 0x30, 0xff}
	for d := dLo; d <= dHi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if d == dHi && m > 1 {
				break
			}
			y := yOf(v)
			hline(img, x0, x1, y, grid)
			if m == 1 {
				label(img, int(x0)-8-7*len(short(v)), int(y)+4, short(v), axis)
			}
		}
	}
	for i, n := range ns {
		x := xOf(i)
		vline(img, x, y0, y1, grid)
		s := strconv.Itoa(n)
		label(img, int(x)-7*len(s)/2, int(y0)+18, s, axis)
	}
	hline(img, x0, x1, y0, axis)
	vline(img, x0, y0, y1, axis)
	label(img, int((x0+x1)/2)-28, plotH-12, "consumers", axis)
	label(img, 10, padTop-14, "tasks/s (log scale)", axis)
	title := fmt.Sprintf("baton bench: %d tasks per run, %d cores, etcd %s", r.Settings.Tasks, r.Machine.Cores, r.Machine.Etcd)
	label(img, padLeft, 20, title, axis)

	row := 0
	for _, sys := range Systems {
		c := plotColors[sys]
		var px, py float64
		have := false
		for i, n := range ns {
			res, ok := r.Find(sys, n)
			if !ok || res.TasksPerS <= 0 {
				have = false
				continue
			}
			x, y := xOf(i), yOf(res.TasksPerS)
			if have {
				line(img, px, py, x, y, 1.5, c)
			}
			square(img, x, y, 4, c)
			px, py, have = x, y, true
		}
		if !r.measured(sys) {
			continue
		}
		ly := float64(padTop + 20 + 22*row)
		line(img, x1+20, ly, x1+50, ly, 1.5, c)
		square(img, x1+35, ly, 4, c)
		name := sys
		if sys == SystemCeiling {
			name += " (txns/s)"
		}
		label(img, int(x1)+58, int(ly)+4, name, axis)
		row++
	}
	return png.Encode(w, img)
}

func (r *Report) measured(sys string) bool {
	for _, res := range r.Results {
		if res.System == sys {
			return true
		}
	}
	return false
}

// short formats an axis value: 10, 100, 1k, 10k.
func short(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, xa, xb, y float64, c color.RGBA) {
	for x := int(xa); x <= int(xb); x++ {
		img.SetRGBA(x, int(y), c)
	}
}

func vline(img *image.RGBA, x, ya, yb float64, c color.RGBA) {
	for y := int(math.Min(ya, yb)); y <= int(math.Max(ya, yb)); y++ {
		img.SetRGBA(int(x), y, c)
	}
}

func square(img *image.RGBA, x, y float64, half int, c color.RGBA) {
	for dx := -half; dx <= half; dx++ {
		for dy := -half; dy <= half; dy++ {
			img.SetRGBA(int(x)+dx, int(y)+dy, c)
		}
	}
}

// line draws a segment of the given half-width by stamping discs along it.
func line(img *image.RGBA, xa, ya, xb, yb, half float64, c color.RGBA) {
	n := int(math.Hypot(xb-xa, yb-ya)*2) + 1
	r := int(math.Ceil(half))
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		x, y := xa+t*(xb-xa), ya+t*(yb-ya)
		for dx := -r; dx <= r; dx++ {
			for dy := -r; dy <= r; dy++ {
				if float64(dx*dx+dy*dy) <= half*half+0.5 {
					img.SetRGBA(int(math.Round(x))+dx, int(math.Round(y))+dy, c)
				}
			}
		}
	}
}
