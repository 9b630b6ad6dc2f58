package source

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []position{
		{},
		{id: fileID{dev: 2049, ino: 131074}, fp: fingerprint{n: 1024, sum: 0xcbf29ce484222325}, off: 1 << 40},
		{id: fileID{dev: 1<<64 - 1, ino: 1<<64 - 1}, fp: fingerprint{n: 7, sum: 1<<64 - 1}, off: 1 << 62},
		{id: fileID{dev: 0, ino: 12}, fp: fingerprint{n: 0, sum: 0}, off: 0},
	}
	for _, p := range tests {
		b := encodeCursor(p)
		got, err := decodeCursor(b)
		if err != nil {
			t.Errorf("decodeCursor(encodeCursor(%+v)): %v", p, err)
			continue
		}
		if got != p {
			t.Errorf("round trip of %+v gave %+v", p, got)
		}
	}
}

func TestDecodeCursorRejects(t *testing.T) {
	valid := encodeCursor(position{id: fileID{dev: 1, ino: 2}, fp: fingerprint{n: 3, sum: 4}, off: 5})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"unknown version", append([]byte{2}, valid[1:]...), "unknown version 2"},
		{"only version", []byte{1}, "truncated or overlong device"},
		{"no hash", valid[:5], "fingerprint hash is 0 bytes, want 8"},
		{"short hash", valid[:len(valid)-1], "fingerprint hash is 7 bytes, want 8"},
		{"trailing byte", append(bytes.Clone(valid), 0), "fingerprint hash is 9 bytes, want 8"},
		{"overlong varint", append([]byte{1}, bytes.Repeat([]byte{0xff}, 11)...), "truncated or overlong device"},
		{"fingerprint too long", encodeCursor(position{fp: fingerprint{n: 1025}}), "fingerprint length 1025 exceeds 1024"},
		{"offset out of range", encodeCursor(position{off: 1<<62 + 1}), "offset 4611686018427387905 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCursor(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrBadCursor) {
				t.Fatalf("decodeCursor(%x) = %v, want ErrBadCursor saying %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 100) // 1600 bytes
	r := bytes.NewReader(content)
	fp10, err := readFingerprint(r, 10)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		r    *bytes.Reader
		want bool
	}{
		{"same content", bytes.NewReader(content), true},
		{"same first bytes, shorter", bytes.NewReader(content[:10]), true},
		{"too short", bytes.NewReader(content[:9]), false},
		{"other content", bytes.NewReader(append([]byte("X"), content[1:]...)), false},
	}
	for _, tt := range tests {
		if got := fp10.matches(tt.r); got != tt.want {
			t.Errorf("%s: matches = %v, want %v", tt.name, got, tt.want)
		}
	}

	if _, err := readFingerprint(r, fingerprintSize+1); err == nil {
		t.Error("readFingerprint past the fingerprint size succeeded")
	}
}

// TestTrackedContent: the head of a file followed grows with what was
// delivered, and tells when the file was rewritten in place.
func TestTrackedContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	content := bytes.Repeat([]byte("0123456789abcdef"), 100) // 1600 bytes
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	scratch := make([]byte, fingerprintSize)
	c := &tracked{f: f}
	c.resetHead()
	same, err := c.sameContent(scratch)
	if !same || err != nil {
		t.Fatalf("empty head: sameContent = %v, %v", same, err)
	}
	for _, pos := range []int64{10, 500, 2000} {
		c.pos = pos
		c.growHead()
		want, _ := readFingerprint(bytes.NewReader(content), int(min(pos, fingerprintSize)))
		if c.fp != want || len(c.head) != want.n {
			t.Errorf("at %d: fingerprint %+v (head %d bytes), want %+v", pos, c.fp, len(c.head), want)
		}
	}
	// A fingerprint from a cursor, without the bytes, is checked by hash.
	fromCursor := &tracked{f: f, fp: c.fp}
	if same, err := fromCursor.sameContent(scratch); !same || err != nil {
		t.Errorf("by hash: sameContent = %v, %v", same, err)
	}

	// Rewritten in place: a different first byte.
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt([]byte("X"), 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []*tracked{c, fromCursor} {
		if same, err := tc.sameContent(scratch); same || err != nil {
			t.Errorf("rewritten: sameContent = %v, %v; want false", same, err)
		}
	}
	short := &tracked{f: f}
	short.resetHead()
	short.pos = 5
	short.growHead()
	before := short.fp
	if _, err := w.WriteAt([]byte("Y"), 0); err != nil {
		t.Fatal(err)
	}
	short.pos = 50
	short.growHead()
	if short.fp != before {
		t.Errorf("head grew over rewritten bytes: %+v, want %+v", short.fp, before)
	}
	// Truncated below the head.
	if err := w.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if same, err := short.sameContent(scratch); same || err != nil {
		t.Errorf("truncated: sameContent = %v, %v; want false", same, err)
	}
}
