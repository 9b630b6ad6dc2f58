package state

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func loadAll(t *testing.T, s *Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.Load(func(r Record) error {
		got[r.Bucket+"/"+string(r.Key)] = string(r.Value)
		return nil
	}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return got
}

func TestCommitLoadRoundTripAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := Open(Options{Path: path}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit([]Record{
		{Bucket: "bans", Key: []byte("a"), Value: []byte("1")},
		{Bucket: "bans", Key: []byte("b"), Value: []byte("2")},
		{Bucket: "positions", Key: []byte("mail\x00/var/log/mail.log"), Value: []byte("pos")},
		{Bucket: "bans", Key: []byte("a"), Value: nil}, // later records win: a is deleted
		{Bucket: "bans", Key: []byte("c"), Value: []byte{}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Path: path}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]string{"bans/b": "2", "bans/c": "", "positions/mail\x00/var/log/mail.log": "pos"}
	got := loadAll(t, s)
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q = %q, want %q", k, got[k], v)
		}
	}
}

func TestCommitIsAllOrNothing(t *testing.T) {
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "state.db")}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Commit([]Record{
		{Bucket: "bans", Key: []byte("a"), Value: []byte("1")},
		{Bucket: "bans", Key: nil, Value: []byte("empty key is refused by bbolt")},
	})
	if err == nil {
		t.Fatal("Commit with an empty key succeeded")
	}
	if got := loadAll(t, s); len(got) != 0 {
		t.Fatalf("a failed commit left %q behind", got)
	}
	if err := s.Commit([]Record{{Bucket: "meta", Key: []byte("schema"), Value: []byte{9}}}); err == nil {
		t.Fatal("Commit into the meta bucket succeeded")
	}
}

func TestLoadErrorNamesBucketAndKey(t *testing.T) {
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "state.db")}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Commit([]Record{{Bucket: "bans", Key: []byte("k1"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("bad version byte")
	err = s.Load(func(Record) error { return bad })
	if !errors.Is(err, bad) || !strings.Contains(err.Error(), `bucket "bans" key "k1"`) {
		t.Fatalf("Load error = %v, want it to wrap the cause and name bucket and key", err)
	}
}

func TestDamagedFiles(t *testing.T) {
	garbage := make([]byte, 64<<10)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"random bytes", func(t *testing.T, path string) { mustWrite(t, path, garbage) }},
		{"text file", func(t *testing.T, path string) { mustWrite(t, path, []byte("bans:\n  - 203.0.113.7\n")) }},
		{"a few bytes", func(t *testing.T, path string) { mustWrite(t, path, []byte{1, 2, 3}) }},
		{"truncated state file", func(t *testing.T, path string) {
			writeValid(t, path)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, path, data[:len(data)/3])
		}},
		{"both meta pages overwritten", func(t *testing.T, path string) {
			writeValid(t, path)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pageSize := os.Getpagesize()
			copy(data[16:pageSize], bytes.Repeat([]byte{0xAB}, pageSize))
			copy(data[pageSize+16:2*pageSize], bytes.Repeat([]byte{0xAB}, pageSize))
			mustWrite(t, path, data)
		}},
		{"bbolt file of another program", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("users"))
				if err != nil {
					return err
				}
				return b.Put([]byte("x"), []byte("y"))
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			tc.write(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			_, err = Open(Options{Path: path}, quiet())
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--fresh-state") {
				t.Errorf("error %q should name the file and say how to start fresh", err)
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(before, after) {
				t.Fatalf("the damaged file was changed (read error %v)", err)
			}

			now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			s, err := Open(Options{Path: path, Fresh: true, Now: func() time.Time { return now }}, quiet())
			if err != nil {
				t.Fatalf("Open with Fresh: %v", err)
			}
			defer s.Close()
			if got := loadAll(t, s); len(got) != 0 {
				t.Errorf("fresh state holds %q", got)
			}
			moved, err := os.ReadFile(path + ".corrupt-20261125T120000Z")
			if err != nil || !bytes.Equal(moved, before) {
				t.Fatalf("the damaged file was not kept aside intact (read error %v)", err)
			}
		})
	}
}

func TestNewerSchemaIsRefusedNotOverwritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeValid(t, path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(schemaKey, []byte{SchemaVersion + 1})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(Options{Path: path, Fresh: true}, quiet())
	if err == nil || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer mailban") {
		t.Fatalf("Open = %v, want a refusal that names a newer mailban and is not ErrCorrupt", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the newer file is gone: %v", err)
	}
}

func TestSecondOpenReportsInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(Options{Path: path}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(Options{Path: path, LockTimeout: 100 * time.Millisecond, Fresh: true}, quiet())
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
}

func TestUnusablePathIsNotCorruption(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Path: path, Fresh: true}, quiet())
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open on a directory = %v, want a plain error", err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatal("the directory was moved or removed")
	}
}

func writeValid(t *testing.T, path string) {
	t.Helper()
	s, err := Open(Options{Path: path}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < 2000; i++ {
		recs = append(recs, Record{Bucket: "ip-windows", Key: []byte{byte(i >> 8), byte(i), 1, 2}, Value: bytes.Repeat([]byte{byte(i)}, 40)})
	}
	if err := s.Commit(recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
