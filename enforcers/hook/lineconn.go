package hook

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"time"
)

// errLineTooLong is a line longer than Limits.MaxLine.
var errLineTooLong = errors.New("line too long")

// lineConn is one connection of a line protocol (native, Postfix), with
// the limits it was accepted under.
type lineConn struct {
	net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	lim     Limits
	started time.Time
}

func newLineConn(c net.Conn, lim Limits) *lineConn {
	size := max(lim.MaxLine+2, 4096) // +2: the line ending
	return &lineConn{
		Conn:    c,
		r:       bufio.NewReaderSize(c, size),
		w:       bufio.NewWriterSize(deadlineWriter{c, lim.RequestTimeout}, 4096),
		lim:     lim,
		started: time.Now(),
	}
}

// readLine returns the next line without its line ending ("\n" or
// "\r\n"); the slice is valid until the next read. first says a request
// begins with this line. Answers written so far are flushed before
// readLine waits, and only then: a client that sends requests back to
// back gets its answers back to back, in as few writes as there are
// reads. Waiting for a request is bounded by IdleTimeout, and the rest of
// a request, once begun, by RequestTimeout.
func (c *lineConn) readLine(first bool) ([]byte, error) {
	if buf, _ := c.r.Peek(c.r.Buffered()); bytes.IndexByte(buf, '\n') < 0 {
		if err := c.flush(); err != nil {
			return nil, err
		}
		if first {
			if len(buf) == 0 {
				c.SetReadDeadline(time.Now().Add(c.lim.IdleTimeout))
				if _, err := c.r.Peek(1); err != nil {
					return nil, err
				}
			}
			c.SetReadDeadline(time.Now().Add(c.lim.RequestTimeout))
		}
	}
	line, err := c.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, errLineTooLong
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > c.lim.MaxLine {
		return nil, errLineTooLong
	}
	return line, nil
}

// flush writes the buffered answers.
func (c *lineConn) flush() error {
	if c.w.Buffered() == 0 {
		return nil
	}
	return c.w.Flush()
}

// deadlineWriter bounds every write to the connection by a timeout, so
// that a client that stops reading is dropped rather than kept, whether
// the write is an explicit flush or a full buffer's.
type deadlineWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.c.Write(p)
}

// tooOld reports whether the connection has lived past MaxConnectionAge.
func (c *lineConn) tooOld(now time.Time) bool {
	return now.Sub(c.started) > c.lim.MaxConnectionAge
}
