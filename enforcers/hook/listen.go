package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// listen opens one configured address. Unix sockets get mode 0660 and
// group; TCP addresses are taken as given (the configuration checked them).
func listen(a listenAddr, group string) (net.Listener, error) {
	if a.network == "unix" {
		return listenUnix(a.address, group)
	}
	ln, err := net.Listen("tcp", a.address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a.address, err)
	}
	return ln, nil
}

// listenUnix creates a unix socket at path, mode 0660, owned by group,
// with no moment at which anyone else could connect: it binds inside a
// fresh private (0700) directory beside path, sets mode and group there,
// and renames the socket into place. A socket already at path that
// answers belongs to a live process and is left alone; a dead one (after
// a crash) is replaced.
func listenUnix(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("socket %s: no group %q on this host: %w", path, group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("socket %s: group %s has gid %q", path, group, g.Gid)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("socket %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another process is listening on it", path)
		}
	}
	private, err := os.MkdirTemp(dir, ".mailban-")
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it will be renamed; Close removes the final path
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, file: fi}, nil
}

// unixListener removes its socket file on Close, unless another process
// has put its own socket there meanwhile.
type unixListener struct {
	*net.UnixListener
	path string
	file fs.FileInfo
	once sync.Once
}

// Addr is the socket's final path, not the name it was bound under.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}

// limitListener closes connections beyond a cap as soon as they are
// accepted, so that a flood costs the mail servers' own connections
// nothing but a retry, and never queues them behind it.
type limitListener struct {
	net.Listener
	max     func() int
	active  atomic.Int64
	refused func()
	opened  func(delta int)
}

// Accept returns the next connection within the cap. Temporary errors
// (out of file descriptors) are returned as they are; the caller backs off.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) > int64(l.max()) {
			l.active.Add(-1)
			c.Close()
			l.refused()
			continue
		}
		l.opened(1)
		return &limitedConn{Conn: c, l: l}, nil
	}
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.active.Add(-1)
		c.l.opened(-1)
	})
	return err
}

// isTemporary reports whether an Accept error is worth retrying after a
// pause (EMFILE, ENFILE, ECONNABORTED) rather than the end of the listener.
func isTemporary(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne)
}
