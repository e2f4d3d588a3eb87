package batoncli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress draws a one-line progress bar when w is a terminal and draws
// nothing otherwise (the command prints a summary line instead).
type progress struct {
	w     io.Writer
	tty   bool
	label string
	total int
	done  int
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, label string, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, tty: tty, label: label, total: total, start: time.Now()}
}

func (p *progress) set(done int) {
	p.done = done
	if !p.tty || time.Since(p.last) < 100*time.Millisecond && done < p.total {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.done) / float64(p.total)
	}
	n := int(frac * width)
	rate := float64(p.done) / max(time.Since(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d %.0f/s ", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n), p.done, p.total, rate)
}

func (p *progress) finish() {
	if p.tty {
		p.draw()
		fmt.Fprintln(p.w)
	}
}
