package state

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code writes. A file with a newer version
// was written by a newer mailban and is refused rather than misread.
const SchemaVersion = 1

var (
	metaBucket = []byte("meta")
	schemaKey  = []byte("schema")
	createdKey = []byte("created")
)

// ErrCorrupt marks a state file that exists but cannot be read as a mailban
// state file. errors.Is(err, ErrCorrupt) tells callers that a fresh start
// (Options.Fresh) would help.
var ErrCorrupt = errors.New("state file is corrupt")

// ErrInUse marks a state file locked by another process.
var ErrInUse = errors.New("state file is in use by another process")

// Record is one key of one bucket. A nil Value deletes the key.
type Record struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// Options says where the state lives and what to do when it is damaged.
type Options struct {
	Path string
	// Fresh moves a corrupt file aside (to Path.corrupt-<time>) and starts
	// empty. Without it a corrupt file is an error and is left untouched.
	Fresh bool
	// LockTimeout bounds the wait for another process's lock (default 2s).
	LockTimeout time.Duration
	// Now names the moved-aside file; nil means time.Now.
	Now func() time.Time
}

// Store is an open state file. Its methods are safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the state file, checking that it is intact.
func Open(opt Options, logger *slog.Logger) (*Store, error) {
	if opt.Path == "" {
		return nil, errors.New("open state: no path given")
	}
	if opt.LockTimeout == 0 {
		opt.LockTimeout = 2 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(opt.Path), 0o700); err != nil {
		return nil, fmt.Errorf("open state: create directory: %w", err)
	}
	s, err := open(opt.Path, opt.LockTimeout)
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return s, err
	}
	if !opt.Fresh {
		return nil, fmt.Errorf("%w; mailban leaves it untouched: move it aside yourself, "+
			"or start with --fresh-state to have mailban move it aside and start with empty state", err)
	}
	aside := fmt.Sprintf("%s.corrupt-%s", opt.Path, opt.Now().UTC().Format("20060102T150405Z"))
	if rerr := os.Rename(opt.Path, aside); rerr != nil {
		return nil, fmt.Errorf("%w; moving it aside failed: %w", err, rerr)
	}
	logger.Warn("state file was corrupt: moved it aside and started with empty state",
		"path", opt.Path, "moved_to", aside, "error", err)
	return open(opt.Path, opt.LockTimeout)
}

func open(path string, lockTimeout time.Duration) (s *Store, err error) {
	// bbolt trusts its pages and can panic on a damaged file, even inside
	// Open after it has locked the file. A panic is a corrupt file, not a
	// crash of the daemon; keeping the *os.File lets us drop the lock so that
	// a fresh start can move the file aside. (A damaged file's mapping is
	// leaked in that case: once, and small next to a daemon that stays up.)
	var file *os.File
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				// bbolt's mmap of the file outlives the descriptor and would
				// keep the lock: drop the lock explicitly, then close.
				_ = syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				file.Close()
			}
			s, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			file = f
			return f, err
		},
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (is another mailban running?)", ErrInUse, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case err != nil && isFormatError(err):
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s = &Store{db: db, path: path}
	if err := s.check(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// isFormatError tells bbolt's complaints about file contents (some of which
// it returns as plain strings, like "file size too small") from I/O and
// permission errors, which carry an *os.PathError or an errno.
func isFormatError(err error) bool {
	var pe *os.PathError
	var errno syscall.Errno
	return !errors.As(err, &pe) && !errors.As(err, &errno)
}

// check verifies the page structure and the schema, and stamps a new file.
func (s *Store) check() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, cerr)
		}
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			if hasBuckets(tx) {
				return fmt.Errorf("%w: %s: it holds data but no mailban schema (not a mailban state file?)", ErrCorrupt, s.path)
			}
			var err error
			if meta, err = tx.CreateBucket(metaBucket); err != nil {
				return err
			}
			if err := meta.Put(schemaKey, []byte{SchemaVersion}); err != nil {
				return err
			}
			return meta.Put(createdKey, []byte(time.Now().UTC().Format(time.RFC3339)))
		}
		v := meta.Get(schemaKey)
		if len(v) != 1 {
			return fmt.Errorf("%w: %s: schema version record is %d bytes, want 1", ErrCorrupt, s.path, len(v))
		}
		if v[0] > SchemaVersion {
			return fmt.Errorf("open state %s: written by a newer mailban (schema %d, this one reads up to %d)", s.path, v[0], SchemaVersion)
		}
		return nil
	})
	return err
}

func hasBuckets(tx *bolt.Tx) bool {
	found := false
	_ = tx.ForEach(func([]byte, *bolt.Bucket) error { found = true; return errStop })
	return found
}

var errStop = errors.New("stop")

// Load calls fn for every record of every bucket but meta, bucket by bucket
// in byte order. The slices are valid only during the call. An error from fn
// stops the walk and is returned wrapped with the bucket and key.
func (s *Store) Load(fn func(r Record) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path, r)
		}
	}()
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if bytes.Equal(name, metaBucket) {
				return nil
			}
			bucket := string(name)
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return nil // nested buckets are not ours to read
				}
				if err := fn(Record{Bucket: bucket, Key: k, Value: v}); err != nil {
					return fmt.Errorf("load state %s: bucket %q key %q: %w", s.path, bucket, k, err)
				}
				return nil
			})
		})
	})
}

// Commit writes the records in order in one transaction: either all of them
// are on disk when it returns nil, or none are.
func (s *Store) Commit(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		var b *bolt.Bucket
		var name string
		for _, r := range recs {
			if r.Bucket == string(metaBucket) || r.Bucket == "" {
				return fmt.Errorf("bucket name %q is reserved", r.Bucket)
			}
			if b == nil || r.Bucket != name {
				var err error
				if b, err = tx.CreateBucketIfNotExists([]byte(r.Bucket)); err != nil {
					return fmt.Errorf("bucket %q: %w", r.Bucket, err)
				}
				name = r.Bucket
			}
			var err error
			if r.Value == nil {
				err = b.Delete(r.Key)
			} else {
				err = b.Put(r.Key, r.Value)
			}
			if err != nil {
				return fmt.Errorf("bucket %q key %q: %w", r.Bucket, r.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit state %s: %w", s.path, err)
	}
	return nil
}

// Size is the state file's size in bytes.
func (s *Store) Size() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Path is where the state lives.
func (s *Store) Path() string { return s.path }

// Close flushes and releases the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state %s: %w", s.path, err)
	}
	return nil
}
