package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// readChunk is how much lineReader reads per call to ReadAt.
const readChunk = 64 << 10

// lineReader reads lines from a file with ReadAt, so that it never moves
// another reader's offset, and never holds more than maxLine bytes of a line:
// the rest of an overlong line is skipped up to its newline.
type lineReader struct {
	buf     []byte // one chunk of the file
	line    []byte // a line that spans chunks, at most maxLine bytes
	maxLine int
}

func newLineReader(maxLine int) *lineReader {
	return &lineReader{buf: make([]byte, readChunk), maxLine: maxLine}
}

// emitFunc receives one line: its text (valid only during the call), the
// offset just after it, and whether the text was cut at maxLine bytes.
type emitFunc func(text []byte, end int64, cut bool) error

// read hands emit every line that starts at off or later and ends with a
// newline. When final is set, bytes after the last newline are handed over as
// a line too (the file will not grow any more). It returns the offset after
// the last line handed over, which is where the next read must start, and the
// first error from r or emit.
func (lr *lineReader) read(r io.ReaderAt, off int64, final bool, emit emitFunc) (int64, error) {
	start := off // where the line being assembled begins
	pos := off   // where the next ReadAt reads
	lr.line = lr.line[:0]
	cut := false
	appendCapped := func(b []byte) {
		if room := lr.maxLine - len(lr.line); len(b) > room {
			b = b[:room]
			cut = true
		}
		lr.line = append(lr.line, b...)
	}
	for {
		n, rerr := r.ReadAt(lr.buf, pos)
		chunk := lr.buf[:n]
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				appendCapped(chunk)
				pos += int64(len(chunk))
				break
			}
			text := chunk[:i]
			if len(lr.line) > 0 || cut {
				appendCapped(text)
				text = lr.line
			} else if len(text) > lr.maxLine {
				text, cut = text[:lr.maxLine], true
			}
			pos += int64(i) + 1
			chunk = chunk[i+1:]
			if err := emit(text, pos, cut); err != nil {
				return start, err
			}
			start = pos
			lr.line = lr.line[:0]
			cut = false
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				break
			}
			return start, fmt.Errorf("read at offset %d: %w", pos, rerr)
		}
		if n == 0 {
			break // a ReaderAt that returns neither data nor an error: treat as EOF
		}
	}
	if final && pos > start {
		if err := emit(lr.line, pos, cut); err != nil {
			return start, err
		}
		start = pos
	}
	return start, nil
}
