package source

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"time"
)

// DefaultReplayQuiet is how long lines that may be a replay are held back
// when no more come (see replay.go).
const DefaultReplayQuiet = time.Second

// readLines sends each line of r, without its newline, on out until r ends
// (a last line without a newline is sent too) or fails; lines longer than
// maxLine are cut (the rest, up to the newline, is dropped). It returns the
// error that ended reading, nil at the end of r, or ctx's when sending was
// abandoned.
func readLines(ctx context.Context, r io.Reader, maxLine int, out chan<- pipeLine) error {
	br := bufio.NewReaderSize(r, min(maxLine+1, readChunk))
	var line []byte // a line that spans reads, at most maxLine bytes
	spanning, cut := false, false
	appendCapped := func(b []byte) {
		if room := maxLine - len(line); len(b) > room {
			b, cut = b[:room], true
		}
		line = append(line, b...)
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			appendCapped(chunk)
			spanning = true
			continue
		}
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		if complete || len(chunk) > 0 || spanning {
			var text string
			if !spanning && len(chunk) <= maxLine {
				text = string(chunk)
			} else {
				appendCapped(chunk)
				text = string(line)
			}
			select {
			case out <- pipeLine{text: text, cut: cut}:
			case <-ctx.Done():
				return ctx.Err()
			}
			line, spanning, cut = line[:0], false, false
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// piped delivers the output of a producer (a command, standard input) as
// Lines, skipping what a restarted producer repeats (replay.go).
type piped struct {
	name    string
	maxLine int
	quiet   time.Duration // DefaultReplayQuiet unless a test says otherwise
	log     *slog.Logger
	health  *health
	now     func() time.Time
	cutOnce bool

	delivered bool // this run delivered a line: problems before it are over
}

// feed delivers one run of a producer's output, read from r, to out. last
// is what the output before held; feed returns what the next run is to be
// compared with, how many lines it delivered, and why reading ended (nil at
// the end of r). When ctx is done, feed calls interrupt, which makes reading
// from r end, and waits for that unless interrupt returns false (r cannot
// be interrupted: the reading goroutine ends at r's next line or end).
func (p *piped) feed(ctx context.Context, r io.Reader, last outputPos, out chan<- Line, interrupt func() bool) (outputPos, int, error) {
	lines := make(chan pipeLine, 64)
	readCtx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
	readDone := make(chan error, 1)
	go func() {
		readDone <- readLines(readCtx, r, p.maxLine, lines)
		close(lines)
	}()

	filter := newReplayFilter(last)
	p.delivered = false
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	delivered := 0
	send := func(ls []positioned) error {
		for _, l := range ls {
			if err := p.deliver(ctx, l, out); err != nil {
				return err
			}
			delivered++
		}
		return nil
	}
	for {
		var err error
		select {
		case l, ok := <-lines:
			if !ok {
				return filter.end(), delivered, <-readDone
			}
			ready, verdict := filter.add(l)
			p.report(verdict, last)
			err = send(ready)
			if filter.holding() {
				quiet.Reset(p.quiet)
			}
		case <-quiet.C:
			if filter.holding() {
				p.log.Info("output began like the last run's, then paused: reading it as new", "held", len(filter.held))
			}
			err = send(filter.quiet())
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			// Only ctx ends a delivery.
			stopReading()
			if interrupt() {
				for range lines { // the reader stops sending once readCtx is done
				}
				<-readDone
			}
			return filter.end(), delivered, err
		}
	}
}

func (p *piped) report(verdict int, last outputPos) {
	switch verdict {
	case verdictNew:
		p.log.Info("output differs from what was read before; reading all of it", "lines_before", last.n)
	case verdictReplay:
		p.log.Info("output repeats what was read before; skipping the lines already read", "lines", last.n)
	case verdictReplayed:
		p.log.Info("skipped the lines already read; reading new lines", "lines", last.n)
	case verdictDiffered:
		p.log.Warn("output began like what was read before but differed later; the lines skipped may have held events",
			"skipped", last.n)
	}
}

func (p *piped) deliver(ctx context.Context, l positioned, out chan<- Line) error {
	if l.cut && !p.cutOnce {
		p.cutOnce = true
		p.log.Warn("line longer than the limit delivered cut; further ones are counted, not logged", "max_line_bytes", p.maxLine)
	}
	now := p.now()
	line := Line{Source: p.name, Text: l.text, Arrival: now, Cursor: Cursor{Value: l.pos.encode()}}
	select {
	case out <- line:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !p.delivered {
		p.delivered = true
		p.health.recovered()
	}
	p.health.update(func(st *StreamStatus) {
		st.Lines++
		st.LastRead = now
		if l.cut {
			st.CutLines++
		}
	})
	return nil
}

// savedOutput decodes the saved cursor of a single-stream piped source.
func savedOutput(saved map[string][]byte) (outputPos, error) {
	v := saved[""]
	if v == nil {
		return outputPos{}, nil
	}
	return decodeOutputPos(v)
}
