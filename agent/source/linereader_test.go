package source

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type readLine struct {
	Text string
	End  int64
	Cut  bool
}

func TestLineReader(t *testing.T) {
	tests := []struct {
		name    string
		content string
		off     int64
		final   bool
		chunk   int // read size; small ones make lines span reads
		maxLine int
		want    []readLine
		wantOff int64
	}{
		{
			name: "complete lines", content: "a\nbb\n\nccc\n", chunk: 64, maxLine: 10,
			want:    []readLine{{"a", 2, false}, {"bb", 5, false}, {"", 6, false}, {"ccc", 10, false}},
			wantOff: 10,
		},
		{
			name: "unfinished line stays", content: "a\nbb", chunk: 64, maxLine: 10,
			want: []readLine{{"a", 2, false}}, wantOff: 2,
		},
		{
			name: "unfinished line when final", content: "a\nbb", chunk: 64, maxLine: 10, final: true,
			want: []readLine{{"a", 2, false}, {"bb", 4, false}}, wantOff: 4,
		},
		{
			name: "from an offset", content: "a\nbb\nccc\n", off: 2, chunk: 64, maxLine: 10,
			want: []readLine{{"bb", 5, false}, {"ccc", 9, false}}, wantOff: 9,
		},
		{
			name: "lines across reads", content: "abcdefgh\nij\nklmnopqrstu\n", chunk: 3, maxLine: 100,
			want:    []readLine{{"abcdefgh", 9, false}, {"ij", 12, false}, {"klmnopqrstu", 24, false}},
			wantOff: 24,
		},
		{
			name: "long line in one read", content: "0123456789abc\nok\n", chunk: 64, maxLine: 5,
			want: []readLine{{"01234", 14, true}, {"ok", 17, false}}, wantOff: 17,
		},
		{
			name: "long line across reads", content: "0123456789abc\nok\n", chunk: 4, maxLine: 5,
			want: []readLine{{"01234", 14, true}, {"ok", 17, false}}, wantOff: 17,
		},
		{
			name: "long unfinished line stays", content: "ok\n0123456789", chunk: 4, maxLine: 5,
			want: []readLine{{"ok", 3, false}}, wantOff: 3,
		},
		{
			name: "long unfinished line when final", content: "ok\n0123456789", chunk: 4, maxLine: 5, final: true,
			want: []readLine{{"ok", 3, false}, {"01234", 13, true}}, wantOff: 13,
		},
		{
			name: "exactly max", content: "01234\n", chunk: 2, maxLine: 5,
			want: []readLine{{"01234", 6, false}}, wantOff: 6,
		},
		{name: "empty", content: "", chunk: 4, maxLine: 5, final: true, wantOff: 0},
		{name: "offset at end", content: "a\n", off: 2, chunk: 4, maxLine: 5, final: true, wantOff: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := &lineReader{buf: make([]byte, tt.chunk), maxLine: tt.maxLine}
			var got []readLine
			off, err := lr.read(strings.NewReader(tt.content), tt.off, tt.final, func(b []byte, end int64, cut bool) error {
				got = append(got, readLine{string(b), end, cut})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			if off != tt.wantOff {
				t.Errorf("offset %d, want %d", off, tt.wantOff)
			}
		})
	}
}

// TestLineReaderStops: an error from emit stops reading at the line that
// was not taken; an error from the file is returned with the offset reached.
func TestLineReaderStops(t *testing.T) {
	lr := &lineReader{buf: make([]byte, 4), maxLine: 10}
	stop := errors.New("stop")
	n := 0
	off, err := lr.read(strings.NewReader("a\nb\nc\n"), 0, false, func([]byte, int64, bool) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || off != 2 {
		t.Errorf("read = %d, %v; want 2, %v", off, err, stop)
	}

	broken := failingReaderAt{data: "a\nb\nccc", failAt: 5}
	off, err = lr.read(broken, 0, true, func([]byte, int64, bool) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "read at offset 4") || off != 4 {
		t.Errorf("read of a failing file = %d, %v; want 4 and a read error", off, err)
	}
}

// failingReaderAt fails reads that reach failAt.
type failingReaderAt struct {
	data   string
	failAt int64
}

func (r failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.failAt {
		return 0, fmt.Errorf("disk on fire")
	}
	n, err := strings.NewReader(r.data).ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}
