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
// nothing otherwise (the command prints a summary line instead), unless
// every is set: then it prints a line that often.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	total int
	done  int
	start time.Time
	last  time.Time
	// pending, when set, counts the unfinished tasks that bounded feeding
	// waits on; the bar then shows it and an ETA.
	pending func() int
	every   time.Duration // lines when w is not a terminal; 0: none
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
	if !p.tty {
		if p.every > 0 && time.Since(p.last) >= p.every && done < p.total {
			p.last = time.Now()
			fmt.Fprintf(p.w, "%s %s\n", p.label, p.status())
		}
		return
	}
	if time.Since(p.last) < 100*time.Millisecond && done < p.total {
		return
	}
	p.last = time.Now()
	p.draw()
}

// status is the count, the rate and, when feeding, the unfinished tasks
// and the ETA at the rate so far.
func (p *progress) status() string {
	rate := float64(p.done) / max(time.Since(p.start).Seconds(), 1e-3)
	s := fmt.Sprintf("%d/%d %.0f/s", p.done, p.total, rate)
	if p.pending != nil {
		eta := "-"
		if rate > 0 && p.done < p.total {
			eta = time.Duration(float64(p.total-p.done) / rate * float64(time.Second)).Round(time.Second).String()
		}
		s += fmt.Sprintf(" %d unfinished ETA %s", p.pending(), eta)
	}
	return s
}

func (p *progress) draw() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.done) / float64(p.total)
	}
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %s ", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n), p.status())
}

func (p *progress) finish() {
	if p.tty {
		p.draw()
		fmt.Fprintln(p.w)
	}
}
