package redistest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options for a test server.
type Options struct {
	// AppendOnly turns on the append-only file with an fsync per write, so
	// that a server killed and started again has lost nothing it answered.
	AppendOnly bool
	// TLS, when set, adds a TLS port (TLSAddr) with these PEM files; the
	// plain port stays for the helper's own checks.
	TLS *TLSFiles
	// Extra lines of redis.conf.
	Extra []string
}

// TLSFiles are the server's certificate and key, and the CA its clients'
// certificates would be checked against (clients are not asked for one).
type TLSFiles struct {
	Cert, Key, CA string
}

// Server is a running redis-server.
type Server struct {
	t       testing.TB
	dir     string
	addr    string
	tlsAddr string
	opt     Options

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a server, or skips the test when redis-server is missing
// (fails it when CI=true: CI must run it).
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server is not installed (apt-get install redis-server); skipping: %v", err)
	}
	s := &Server{t: t, dir: t.TempDir(), opt: opt}
	s.addr = freePort(t)
	if opt.TLS != nil {
		s.tlsAddr = freePort(t)
	}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return s.addr }

// TLSAddr is the TLS port's host:port ("" without Options.TLS).
func (s *Server) TLSAddr() string { return s.tlsAddr }

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Restart starts the server (again) on the same port and directory and
// waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("redistest: Restart of a running server")
	}
	_, port, _ := net.SplitHostPort(s.addr)
	conf := []string{
		"bind 127.0.0.1",
		"port " + port,
		"dir " + s.dir,
		"save \"\"",
		"daemonize no",
		"protected-mode yes",
		"logfile " + filepath.Join(s.dir, "redis.log"),
	}
	if s.opt.AppendOnly {
		conf = append(conf, "appendonly yes", "appendfsync always", "appenddirname aof")
	} else {
		conf = append(conf, "appendonly no")
	}
	if f := s.opt.TLS; f != nil {
		_, tport, _ := net.SplitHostPort(s.tlsAddr)
		conf = append(conf, "tls-port "+tport, "tls-cert-file "+f.Cert, "tls-key-file "+f.Key,
			"tls-ca-cert-file "+f.CA, "tls-auth-clients no")
	}
	conf = append(conf, s.opt.Extra...)
	path := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("redis-server", path)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on %s does not answer: %v\n%s", s.addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Do sends one command (words only) and returns the first line of the
// reply, for tests that look at keys directly.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func ping(addr string) error { return pingWithin(addr, time.Second) }

func pingWithin(addr string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Flush empties the server between tests that share it.
func (s *Server) Flush(ctx context.Context) error {
	_, err := s.Do("FLUSHALL")
	return err
}

// Info returns the INFO section, whole.
func (s *Server) Info(section string) (string, error) {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section)
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	var n int
	if _, err := fmt.Sscanf(head, "$%d", &n); err != nil {
		return "", fmt.Errorf("INFO answered %q", head)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Stall makes the server stop answering for d (DEBUG SLEEP; the server
// needs "enable-debug-command local"), returning once it has stopped, and
// a function that waits until it answers again.
func (s *Server) Stall(d time.Duration) (wait func() error, err error) {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return nil, err
	}
	secs := fmt.Sprintf("%.3f", d.Seconds())
	if _, err := fmt.Fprintf(c, "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$%d\r\n%s\r\n", len(secs), secs); err != nil {
		c.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(d + 10*time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "+OK") {
			err = fmt.Errorf("DEBUG SLEEP answered %q", line)
		}
		done <- err
	}()
	// The sleep has begun when a PING goes unanswered.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := pingWithin(s.addr, 50*time.Millisecond); err != nil {
			return func() error { return <-done }, nil
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("the server answered before stalling: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("the server did not stall within 5s")
}
