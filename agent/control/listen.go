package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/mailban/mailban/agent/config"
)

// DefaultSocket is where the daemon listens and the CLI connects unless
// configured otherwise; systemd's RuntimeDirectory=mailban creates its
// directory.
const DefaultSocket = config.DefaultControlSocket

// Listener is the control socket. Close removes the socket file if it is
// still the one Listen made.
type Listener struct {
	*net.UnixListener
	path string
	made os.FileInfo
}

// Listen makes the control socket at path, readable and writable by its
// owner only (0600), or also by group when group is not empty (0660). The
// socket gets its mode before it gets its name, so no one can connect in
// between. A socket left behind by a mailban that is gone is replaced; one
// that a running mailban answers on is not.
func Listen(path, group string) (*Listener, error) {
	if path == "" {
		return nil, errors.New("listen on control socket: no path")
	}
	gid := -1
	mode := os.FileMode(0o600)
	if group != "" {
		var err error
		if gid, err = LookupGroup(group); err != nil {
			return nil, fmt.Errorf("listen on control socket: %w", err)
		}
		mode = 0o660
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("listen on control socket: create directory: %w", err)
	}
	if err := checkStale(path); err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}

	tmp, err := os.MkdirTemp(dir, ".control-")
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the name changes below; Close removes the right one
	fail := func(err error) (*Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(tmpPath, mode); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmpPath, -1, gid); err != nil {
			return fail(fmt.Errorf("give it to group %s: %w (run as root, or as a member of that group)", group, err))
		}
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fail(err)
	}
	made, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &Listener{UnixListener: ln, path: path, made: made}, nil
}

// checkStale refuses a path that is not a socket, or that a live process
// answers on; a dead socket may be replaced.
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("it exists and is not a socket (remove it, or set control.socket to another path)")
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return errors.New("another process (another mailban?) answers on it; stop it first, or set control.socket to another path")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check whether it is in use: %w", err)
	}
	return nil
}

// Path is where the socket is.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket, unless another process has
// put its own in its place meanwhile.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.made) {
		if rerr := os.Remove(l.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// LookupGroup resolves a group name or number to a gid.
func LookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}
