package bench

import (
	"fmt"
	"image/color"
	"io"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plot is a grid of panels, each plotPanelW × plotPanelH pixels: the
// fleet sweep's throughput, per-task costs and dispatch latency against
// sidecars, then, when the systems were compared, tasks/s against
// consumers for each system.
const (
	plotPanelW, plotPanelH = 520, 340
	plotDPI                = 96
	plotTitleH             = 36 // pixels above the panels for the run's title
)

// Colours of the systems in the plot, and of the fleet's series.
var (
	plotColors = map[string]color.RGBA{
		SystemCeiling: {0x80, 0x80, 0x80, 0xff},
		SystemRecipes: {0xe0, 0x8a, 0x00, 0xff},
		SystemNaive:   {0xc0, 0x20, 0x20, 0xff},
		SystemBaton:   {0x1f, 0x5f, 0xd0, 0xff},
	}
	colBacklog = color.RGBA{0x1f, 0x5f, 0xd0, 0xff}
	colIdle    = color.RGBA{0xe0, 0x8a, 0x00, 0xff}
	colExtra   = color.RGBA{0xc0, 0x20, 0x20, 0xff}
)

// series is one line of a panel.
type series struct {
	name   string
	color  color.RGBA
	dashed bool
	xy     plotter.XYs
}

// WritePlot draws the report as a PNG: a panel for each fleet figure
// (x: sidecars, log scale) and one for the systems comparison (x:
// consumers, y: tasks/s, log scales), whichever were measured.
func (r *Report) WritePlot(w io.Writer) error {
	var panels []*plot.Plot
	if len(r.Fleet) > 0 {
		ps, err := r.fleetPanels()
		if err != nil {
			return err
		}
		panels = append(panels, ps...)
	}
	if len(r.Results) > 0 {
		p, err := r.systemsPanel()
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return fmt.Errorf("plot: nothing measured")
	}
	cols := min(len(panels), 3)
	rows := (len(panels) + cols - 1) / cols
	width := vg.Length(cols*plotPanelW) * vg.Inch / plotDPI
	height := vg.Length(rows*plotPanelH+plotTitleH) * vg.Inch / plotDPI
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)

	title := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, 15), XAlign: draw.XCenter, YAlign: draw.YTop, Handler: plot.DefaultTextHandler}
	dc.FillText(title, vg.Point{X: width / 2, Y: height - 8}, r.plotTitle())
	body := draw.Crop(dc, 0, 0, 0, -vg.Length(plotTitleH)*vg.Inch/plotDPI)

	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(grid, t, body)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

func (r *Report) plotTitle() string {
	m := r.Machine
	s := fmt.Sprintf("baton bench: etcd %s, %d cores", m.Etcd, m.Cores)
	if len(r.Fleet) > 0 {
		s += fmt.Sprintf("; fleet: one in-process sidecar per worker, %d-task backlog, %d tasks to idle workers",
			r.Settings.FleetTasks, r.Settings.DispatchSamples)
	}
	return s
}

// fleetPanels draws each fleet figure against the number of sidecars.
func (r *Report) fleetPanels() ([]*plot.Plot, error) {
	xs := make([]float64, len(r.Fleet))
	for i, f := range r.Fleet {
		xs[i] = float64(f.Sidecars)
	}
	of := func(v func(FleetResult) float64) plotter.XYs {
		xy := make(plotter.XYs, len(r.Fleet))
		for i, f := range r.Fleet {
			xy[i] = plotter.XY{X: xs[i], Y: v(f)}
		}
		return xy
	}
	backlog := func(name string, v func(PhaseCost) float64) series {
		return series{name: name, color: colBacklog, xy: of(func(f FleetResult) float64 { return v(f.Drain) })}
	}
	idle := func(name string, v func(PhaseCost) float64) series {
		return series{name: name, color: colIdle, dashed: true, xy: of(func(f FleetResult) float64 { return v(f.Idle) })}
	}
	specs := []struct {
		title, y string
		ss       []series
	}{
		{"throughput, draining a backlog", "tasks/s", []series{
			{name: "tasks/s", color: colBacklog, xy: of(func(f FleetResult) float64 { return f.TasksPerS })}}},
		{"dispatch to idle workers", "ms from submit to Next", []series{
			{name: "p50", color: colBacklog, xy: of(func(f FleetResult) float64 { return f.DispatchP50MS })},
			{name: "p99", color: colExtra, dashed: true, xy: of(func(f FleetResult) float64 { return f.DispatchP99MS })}}},
		{"etcd write txns per task", "txns/task (failed included)", []series{
			backlog("backlog", func(c PhaseCost) float64 { return c.TxnsPerTask }),
			idle("idle workers", func(c PhaseCost) float64 { return c.TxnsPerTask }),
			{name: "failed, idle workers", color: colExtra, dashed: true, xy: of(func(f FleetResult) float64 { return f.Idle.FailedTxnsPerTask })}}},
		{"watch events etcd sent per task", "events/task", []series{
			backlog("backlog", func(c PhaseCost) float64 { return c.WatchEventsPerTask }),
			idle("idle workers", func(c PhaseCost) float64 { return c.WatchEventsPerTask })}},
		{"bytes etcd sent to clients per task", "KB/task", []series{
			backlog("backlog", func(c PhaseCost) float64 { return c.SentBytesPerTask / 1000 }),
			idle("idle workers", func(c PhaseCost) float64 { return c.SentBytesPerTask / 1000 })}},
		{"CPU per task (fleet = sidecars + consumers)", "CPU ms/task", []series{
			backlog("fleet, backlog", func(c PhaseCost) float64 { return c.CPUMSPerTask }),
			idle("fleet, idle workers", func(c PhaseCost) float64 { return c.CPUMSPerTask }),
			{name: "etcd, backlog", color: colExtra, xy: of(func(f FleetResult) float64 { return deref(f.Drain.EtcdCPUMSPerTask) })}}},
	}
	ticks := make([]plot.Tick, len(xs))
	for i, x := range xs {
		ticks[i] = plot.Tick{Value: x, Label: strconv.Itoa(int(x))}
	}
	var ps []*plot.Plot
	for _, s := range specs {
		if s.ss[len(s.ss)-1].name == "etcd, backlog" && r.Fleet[0].Drain.EtcdCPUMSPerTask == nil {
			s.ss = s.ss[:len(s.ss)-1]
		}
		p, err := panel(s.title, "sidecars (one worker each)", s.y, s.ss)
		if err != nil {
			return nil, err
		}
		if len(xs) > 1 {
			p.X.Scale = plot.LogScale{}
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Min, p.X.Max = xs[0]/1.25, xs[len(xs)-1]*1.25
		p.Y.Min = 0
		p.Y.Max *= 1.25 // room for the legend
		ps = append(ps, p)
	}
	return ps, nil
}

// systemsPanel draws tasks/s against consumers for each system compared.
func (r *Report) systemsPanel() (*plot.Plot, error) {
	var ss []series
	for _, sys := range Systems {
		var xy plotter.XYs
		for _, n := range r.Settings.Consumers {
			if res, ok := r.Find(sys, n); ok && res.TasksPerS > 0 {
				xy = append(xy, plotter.XY{X: float64(n), Y: res.TasksPerS})
			}
		}
		if len(xy) > 0 {
			name := sys
			if sys == SystemCeiling {
				name += " (txns/s)"
			}
			ss = append(ss, series{name: name, color: plotColors[sys], xy: xy})
		}
	}
	if len(ss) == 0 {
		return nil, fmt.Errorf("plot: no throughput measured")
	}
	p, err := panel(fmt.Sprintf("systems: %d tasks, %d sidecar processes", r.Settings.Tasks, r.Settings.Sidecars), "consumers", "tasks/s", ss)
	if err != nil {
		return nil, err
	}
	var ticks []plot.Tick
	for _, n := range r.Settings.Consumers {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: strconv.Itoa(n)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if len(r.Settings.Consumers) > 1 {
		p.X.Scale = plot.LogScale{}
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = float64(r.Settings.Consumers[0])/1.25, float64(r.Settings.Consumers[len(r.Settings.Consumers)-1])*1.25
	p.Y.Max *= 3 // room for the legend on a log scale
	return p, nil
}

// panel is one plot with a line and points per series and a legend.
func panel(title, x, y string, ss []series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.ThumbnailWidth = vg.Points(24)
	for _, s := range ss {
		l, pts, err := plotter.NewLinePoints(s.xy)
		if err != nil {
			return nil, fmt.Errorf("plot: %s: %w", s.name, err)
		}
		l.Color, l.Width = s.color, vg.Points(1.8)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		pts.Color, pts.Shape, pts.Radius = s.color, draw.CircleGlyph{}, vg.Points(3)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	return p, nil
}

func deref(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}
