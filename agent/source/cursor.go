package source

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"syscall"
)

// ErrBadCursor is wrapped by the error NewFile returns for a saved cursor it
// cannot decode.
var ErrBadCursor = errors.New("bad cursor")

// fingerprintSize is how many leading bytes of a file identify its content.
const fingerprintSize = 1024

// cursorV1 marks the first (and so far only) encoding of a file position.
const cursorV1 = 1

// fileID is the identity of an inode while it exists. The kernel reuses inode
// numbers, so a fileID alone cannot tell a new file from an old one: a
// fingerprint of the content goes with it.
type fileID struct {
	dev, ino uint64
}

func fileIDOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true //nolint:unconvert // Dev is not uint64 on every platform.
}

// fingerprint is an FNV-64a hash of a file's first n bytes (n ≤ fingerprintSize).
type fingerprint struct {
	n   int
	sum uint64
}

// fingerprintOf hashes b.
func fingerprintOf(b []byte) fingerprint {
	h := fnv.New64a()
	h.Write(b)
	return fingerprint{n: len(b), sum: h.Sum64()}
}

// readFingerprint hashes the first n bytes of r. It fails with io.ErrUnexpectedEOF
// if r is shorter than n.
func readFingerprint(r io.ReaderAt, n int) (fingerprint, error) {
	if n < 0 || n > fingerprintSize {
		return fingerprint{}, fmt.Errorf("fingerprint length %d out of range", n)
	}
	var buf [fingerprintSize]byte
	got, err := r.ReadAt(buf[:n], 0)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fingerprint{}, err
	}
	return fingerprintOf(buf[:n]), nil
}

// matches reports whether r still starts with the bytes fp was taken from.
// A read error counts as no match: the caller treats the content as unknown.
func (fp fingerprint) matches(r io.ReaderAt) bool {
	ok, err := fp.check(r)
	return ok && err == nil
}

// check reports whether r still starts with the bytes fp was taken from; r
// being shorter is a mismatch, not an error. The error is a failure to read.
func (fp fingerprint) check(r io.ReaderAt) (bool, error) {
	got, err := readFingerprint(r, fp.n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return got == fp, nil
}

// position says where reading of one file content resumes: the first byte
// after the last line delivered.
type position struct {
	id  fileID
	fp  fingerprint
	off int64
}

// encodeCursor writes p as a versioned, self-checking byte string:
// version, then uvarints dev, ino, fingerprint length, offset, then the 8-byte
// fingerprint hash.
func encodeCursor(p position) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+8)
	b = append(b, cursorV1)
	b = binary.AppendUvarint(b, p.id.dev)
	b = binary.AppendUvarint(b, p.id.ino)
	b = binary.AppendUvarint(b, uint64(p.fp.n))
	b = binary.AppendUvarint(b, uint64(p.off))
	b = binary.BigEndian.AppendUint64(b, p.fp.sum)
	return b
}

// decodeCursor is the inverse of encodeCursor.
func decodeCursor(b []byte) (position, error) {
	if len(b) == 0 {
		return position{}, fmt.Errorf("%w: empty", ErrBadCursor)
	}
	if b[0] != cursorV1 {
		return position{}, fmt.Errorf("%w: unknown version %d", ErrBadCursor, b[0])
	}
	rest := b[1:]
	var fields [4]uint64
	names := [4]string{"device", "inode", "fingerprint length", "offset"}
	for i := range fields {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return position{}, fmt.Errorf("%w: truncated or overlong %s", ErrBadCursor, names[i])
		}
		fields[i] = v
		rest = rest[n:]
	}
	if len(rest) != 8 {
		return position{}, fmt.Errorf("%w: fingerprint hash is %d bytes, want 8", ErrBadCursor, len(rest))
	}
	if fields[2] > fingerprintSize {
		return position{}, fmt.Errorf("%w: fingerprint length %d exceeds %d", ErrBadCursor, fields[2], fingerprintSize)
	}
	if fields[3] > 1<<62 {
		return position{}, fmt.Errorf("%w: offset %d out of range", ErrBadCursor, fields[3])
	}
	return position{
		id:  fileID{dev: fields[0], ino: fields[1]},
		fp:  fingerprint{n: int(fields[2]), sum: binary.BigEndian.Uint64(rest)},
		off: int64(fields[3]),
	}, nil
}
