package hook_test

// Private Dovecot and Postfix instances for the tests that need the real
// servers: each has its own configuration directory, listens on loopback
// ports of its own, and is stopped by pid and removed when its test ends.

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailban/mailban/agent"
	"github.com/mailban/mailban/agent/config"
)

// needRealServers skips the test when it cannot run here, except under
// CI=true, where a missing prerequisite fails it: .ci/run installs them.
func needRealServers(t *testing.T, programs ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s (.ci/run installs the packages; run as root)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + msg)
	}
	t.Skip(msg)
}

// serverDir is a short-named directory the servers' unprivileged users can
// traverse (0755), removed when the test ends.
func serverDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbsrv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// freePort finds a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until something accepts on addr.
func waitListening(t *testing.T, addr string, exited <-chan struct{}, logs ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("the server exited before listening on %s\n%s", addr, readLogs(logs...))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 20s\n%s", addr, readLogs(logs...))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLogs(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "--- %s\n%s", p, data)
	}
	return b.String()
}

// stopProcess sends SIGTERM to pid and waits for exited, then SIGKILL.
func stopProcess(t *testing.T, name string, pid int, exited <-chan struct{}) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Errorf("%s (pid %d) did not stop on SIGTERM; killing it", name, pid)
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
}

// dovecot is a private Dovecot 2.3: IMAP on a loopback port, users from a
// passwd file, mail in the test's directory.
type dovecot struct {
	dir       string
	imap      string // host:port
	log       string // its log_path
	authPath  string // the auth socket Postfix uses, when asked for
	passwords map[string]string
}

type dovecotOptions struct {
	policyURL  string // auth_policy_server_url; "" for none
	apiKey     string
	forPostfix bool // an auth socket Postfix's smtpd (user postfix) can use
}

// testUsers are the accounts every private server knows.
var testUsers = map[string]string{"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}

func startDovecot(t *testing.T, opt dovecotOptions) *dovecot {
	t.Helper()
	dir := serverDir(t)
	d := &dovecot{dir: dir, imap: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(dir, "dovecot.log"), passwords: testUsers}
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nobody := lookupID(t, "nobody")
	if err := os.Chown(filepath.Join(dir, "mail"), nobody, -1); err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for u, p := range testUsers {
		fmt.Fprintf(&users, "%s:{PLAIN}%s::::::\n", u, p)
	}
	// The auth process reads it as the dovecot user.
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(users.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "passwd"), lookupID(t, "dovecot"), -1); err != nil {
		t.Fatal(err)
	}
	// The log file exists before Dovecot starts, so that a source can
	// follow it from its first line.
	if err := os.WriteFile(d.log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(d.imap)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = %[2]s
log_path = %[1]s/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# No delays: tests make many failed logins from few addresses. Without its
# listener, Dovecot's own growing per-address delay (auth penalty) is off.
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
mail_location = maildir:%[1]s/mail/%%u
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=%[1]s/mail/%%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[3]s
  }
  inet_listener imaps {
    port = 0
  }
}
`, dir, filepath.Base(dir), port)
	if opt.policyURL != "" {
		conf += fmt.Sprintf("auth_policy_server_url = %s\nauth_policy_server_api_header = X-API-Key: %s\nauth_policy_hash_nonce = test-nonce-%s\n",
			opt.policyURL, opt.apiKey, filepath.Base(dir))
	}
	if opt.forPostfix {
		d.authPath = filepath.Join(dir, "run", "auth-postfix")
		conf += "service auth {\n  unix_listener auth-postfix {\n    mode = 0660\n    user = postfix\n    group = postfix\n  }\n}\n"
	}
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	exited, out := startServer(t, dir, "dovecot", exec.Command("dovecot", "-F", "-c", confPath), nil, d.log)
	waitListening(t, d.imap, exited, d.log, out)
	if d.authPath != "" {
		waitFile(t, d.authPath)
	}
	return d
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lookupID(t *testing.T, user string) int {
	t.Helper()
	out, err := exec.Command("id", "-u", user).Output()
	if err != nil {
		t.Fatalf("id -u %s: %v", user, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dialFrom connects to addr from a loopback source address, so that one
// test can look like many clients.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// imapLogins tries each password for user on one IMAP connection from
// the address from, and returns the tagged answer to each LOGIN. It logs
// out at the end, when Dovecot writes its line about the connection.
func imapLogins(t *testing.T, from, addr, user string, passwords ...string) []string {
	t.Helper()
	c := dialFrom(t, from, addr)
	defer c.Close()
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("IMAP greeting %q %v", l, err)
	}
	var answers []string
	for i, p := range passwords {
		tag := fmt.Sprintf("a%d", i)
		fmt.Fprintf(c, "%s LOGIN %s %s\r\n", tag, imapQuote(user), imapQuote(p))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("LOGIN %s: %v (answers so far %q)", user, err, answers)
			}
			if strings.HasPrefix(l, tag+" ") {
				answers = append(answers, strings.TrimSpace(strings.TrimPrefix(l, tag+" ")))
				break
			}
		}
		if strings.HasPrefix(answers[len(answers)-1], "OK") {
			break // logged in: no more LOGIN in this state
		}
	}
	fmt.Fprintf(c, "z LOGOUT\r\n")
	for {
		l, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(l, "z ") {
			break
		}
	}
	return answers
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// postfix is a private Postfix: smtpd on a loopback port, SASL through a
// Dovecot, the hook asked at CONNECT and at MAIL and RCPT through the
// socket private/mailban in its queue directory, configured as README.md
// says.
type postfix struct {
	dir    string
	smtp   string
	log    string
	policy string // where Postfix looks for the hook's socket
	milter string // where unix:private/mailban-milter is
}

// startPostfix starts a Postfix asking the hook's policy service at
// CONNECT, MAIL and RCPT.
func startPostfix(t *testing.T, saslPath string) *postfix {
	t.Helper()
	return startPostfixWith(t, saslPath, "")
}

// startPostfixWith starts a Postfix with SASL through Dovecot at saslPath,
// asking the hook's policy service, or, when milters is not empty, the
// milters it names (smtpd_milters) with the README's settings and no
// policy service.
func startPostfixWith(t *testing.T, saslPath, milters string) *postfix {
	t.Helper()
	dir := serverDir(t)
	p := &postfix{dir: dir, smtp: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(dir, "maillog")}
	etc, queue, data := filepath.Join(dir, "etc"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	p.policy = filepath.Join(queue, "private", "mailban")
	p.milter = filepath.Join(queue, "private", "mailban-milter")
	for _, d := range []string{etc, queue, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(data, lookupID(t, "postfix"), -1); err != nil {
		t.Fatal(err)
	}
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.test
mydestination =
mynetworks =
alias_maps =
local_recipient_maps =
maillog_file = %[3]s
maillog_file_prefixes = %[4]s
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = %[5]s
`, queue, data, p.log, dir, saslPath)
	if milters == "" {
		mainCf += `smtpd_delay_reject = no
mailban_policy = check_policy_service { unix:private/mailban, timeout=2s, default_action=DUNNO }
smtpd_client_restrictions = $mailban_policy
smtpd_sender_restrictions = $mailban_policy
smtpd_relay_restrictions = $mailban_policy, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
`
	} else {
		mainCf += `smtpd_milters = ` + milters + `
milter_default_action = accept
milter_protocol = 6
milter_mail_macros = i {auth_type} {auth_authen} {auth_ssf} {auth_author} {mail_addr} {mail_host} {mail_mailer}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
`
	}
	_, port, _ := net.SplitHostPort(p.smtp)
	masterCf := "127.0.0.1:" + port + ` inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	for name, text := range map[string]string{"main.cf": mainCf, "master.cf": masterCf} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// start-fg keeps master(8) a child of ours (under postfix-script);
	// master.pid names master(8) itself, and stopping it ends its children
	// and the postfix-script we started.
	masterPid := func(started int) int {
		if b, err := os.ReadFile(filepath.Join(queue, "pid", "master.pid")); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return n
			}
		}
		return started
	}
	exited, out := startServer(t, dir, "postfix master", exec.Command("postfix", "-c", etc, "start-fg"), masterPid, p.log)
	waitListening(t, p.smtp, exited, p.log, out)
	return p
}

// smtpSession is an SMTP conversation from one client address.
type smtpSession struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialSMTP(t *testing.T, from, addr string) (*smtpSession, string) {
	t.Helper()
	c := dialFrom(t, from, addr)
	t.Cleanup(func() { c.Close() })
	s := &smtpSession{t: t, Conn: c, r: bufio.NewReader(c)}
	return s, s.reply()
}

// reply reads one (possibly multi-line) reply and returns its last line,
// or "" when the server has hung up.
func (s *smtpSession) reply() string {
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return ""
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (s *smtpSession) cmd(line string) string {
	s.t.Helper()
	if _, err := fmt.Fprintf(s, "%s\r\n", line); err != nil {
		return ""
	}
	return s.reply()
}

func plainAuth(user, pass string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
}

// runAgent starts mailban on a configuration (YAML, with %[1]s standing
// for dir) and stops it when the test ends.
func runAgent(t *testing.T, dir, yaml string) *agent.Agent {
	t.Helper()
	path := filepath.Join(dir, "mailban.yaml")
	text := fmt.Sprintf(yaml, dir)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Control.Socket = "" // the default path is the host's, and other tests may hold it
	logger := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := agent.New(cfg, agent.Options{Logger: logger, HostAddresses: func() ([]netip.Prefix, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent: %v", err)
		}
	})
	return a
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// waitRefused waits until the engine refuses addr (and login, if given),
// or allows it when want is false.
func waitRefused(t *testing.T, a *agent.Agent, addr, login string, want bool) {
	t.Helper()
	var ip netip.Addr
	if addr != "" {
		ip = netip.MustParseAddr(addr)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := a.Engine().Check(ip, login)
		if !v.Allow == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s %s %q is refused=%v, want %v", addr, login, !v.Allow, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// banAndLockOverNative reports failures over the native socket in dir
// that ban 127.0.0.5 and lock bob@example.test (from addresses other than
// the one he will send from), and waits until both are refused.
func banAndLockOverNative(t *testing.T, a *agent.Agent, dir string) {
	t.Helper()
	native := dialNative(t, filepath.Join(dir, "hook.sock"))
	for _, req := range []string{
		"REPORT fail ip=127.0.0.5 attempts=3 service=smtp",
		"REPORT fail ip=192.0.2.1 login=bob@example.test",
		"REPORT fail ip=192.0.2.2 login=bob@example.test",
		"REPORT fail ip=192.0.2.3 login=bob@example.test",
	} {
		if got := native.ask(req); got != "OK" {
			t.Fatalf("%s: %s", req, got)
		}
	}
	waitRefused(t, a, "127.0.0.5", "", true)
	waitRefused(t, a, "", "bob@example.test", true)
}

// startServer starts cmd, a mail server in the foreground, with its output
// in dir/stderr (whose path it returns), and stops it when the test ends:
// the process pid names (nil: cmd's own), logging logs and that output if
// the test failed. exited is closed when cmd ends.
func startServer(t *testing.T, dir, name string, cmd *exec.Cmd, pid func(started int) int, logs ...string) (exited <-chan struct{}, out string) {
	t.Helper()
	out = filepath.Join(dir, "stderr")
	stderr, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		p := cmd.Process.Pid
		if pid != nil {
			p = pid(p)
		}
		stopProcess(t, name, p, done)
		if t.Failed() {
			t.Log(readLogs(append(logs, out)...))
		}
	})
	return done, out
}
