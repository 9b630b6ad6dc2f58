package hook_test

// A private nginx mail proxy (Debian's nginx with libnginx-mod-mail) asking
// the hook's nginx listener, which chains to an auth_http service and an
// IMAP backend that the test runs itself on loopback.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nginxMailModule is where Debian's libnginx-mod-mail puts the module.
const nginxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"

// TestNginxMailProxy runs a real nginx mail proxy whose auth_http is the
// hook, chained to an auth_http service that sends good logins to an IMAP
// backend. Over IMAP through nginx: a good login reaches the backend; a
// banned address is refused with mailban's message and hung up on, the
// upstream not asked; failed logins the upstream refuses are counted (the
// hook's report), so they lock a login, which is then refused from a new
// address while another login from it passes, and they ban an address. A
// login nginx escapes (a space) is locked under the name the client typed.
func TestNginxMailProxy(t *testing.T) {
	needRealServers(t, "nginx")
	needNginxMailModule(t)
	dir := serverDir(t)
	backend := startIMAPBackend(t)
	upstream := startAuthHTTP(t, backend.addr, "")
	hookPort := freePort(t)
	// nginx sends the client's address as Client-IP: these clients are
	// 127.0.0.x, so mailbanConfig leaves loopback out of the allowlist.
	// No nginx.auth-wait: a refusal carries no Auth-Wait, and nginx then
	// answers NO and closes the connection.
	a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "3/1h")+fmt.Sprintf(`
sources: []
enforcers:
  hook:
    native: {listen: [%%[1]s/hook.sock]}
    nginx: {listen: ["127.0.0.1:%d"], api-key: "nginx-s3cret", upstream: "%s/auth"}
`, hookPort, upstream.URL))
	proxy := startNginx(t, fmt.Sprintf("127.0.0.1:%d/mailban", hookPort), "nginx-s3cret")
	alice, bob := "alice@example.test", "bob@example.test"

	// 1. A good login goes through nginx to the backend, the upstream
	// having been asked with nginx's headers (and not mailban's API key).
	if got := nginxIMAPLogin(t, "127.0.0.2", proxy.imap, alice, testUsers[alice]); got.answer != "OK backend: logged in" || got.afterLogin != "OK backend: noop" {
		t.Fatalf("alice through nginx: %+v", got)
	}
	if got := backend.loginsOf(alice); got != 1 {
		t.Errorf("the backend saw alice log in %d times, want 1", got)
	}
	asked := upstream.calls()
	if len(asked) != 1 {
		t.Fatalf("the upstream was asked %d times, want 1", len(asked))
	}
	for k, v := range map[string]string{"Auth-User": alice, "Auth-Pass": testUsers[alice], "Client-Ip": "127.0.0.2",
		"Auth-Protocol": "imap", "Auth-Method": "plain", "Auth-Login-Attempt": "1", "X-Api-Key": ""} {
		if got := asked[0].Get(k); got != v {
			t.Errorf("the upstream got %s %q, want %q", k, got, v)
		}
	}

	// 2. A banned address: nginx answers mailban's refusal and hangs up;
	// the upstream is not asked, nothing reaches the backend.
	native := dialNative(t, filepath.Join(dir, "hook.sock"))
	if got := native.ask("REPORT fail ip=127.0.0.9 attempts=3 service=imap"); got != "OK" {
		t.Fatalf("REPORT: %s", got)
	}
	waitRefused(t, a, "127.0.0.9", "", true)
	before := len(upstream.calls())
	got := nginxIMAPLogin(t, "127.0.0.9", proxy.imap, bob, testUsers[bob])
	if got.answer != "NO too many failed logins from your address, try again later" || !got.closed {
		t.Errorf("bob from the banned address: %+v, want mailban's refusal and a hang-up", got)
	}
	if len(upstream.calls()) != before || backend.loginsOf(bob) != 0 {
		t.Errorf("the banned address's login reached the upstream or the backend")
	}

	// 3 and 4. Wrong passwords for bob from three addresses: the upstream
	// refuses them, nginx hangs up (its answer has no Auth-Wait), and the
	// hook reports each as a failure, which locks bob.
	for i, from := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		got := nginxIMAPLogin(t, from, proxy.imap, bob, fmt.Sprintf("guess-%d", i))
		if got.answer != "NO Invalid login or password" || !got.closed {
			t.Fatalf("a wrong password from %s: %+v", from, got)
		}
	}
	waitRefused(t, a, "", bob, true)
	// From a new address bob's right password is refused by mailban...
	before = len(upstream.calls())
	got = nginxIMAPLogin(t, "127.0.0.6", proxy.imap, bob, testUsers[bob])
	if got.answer != "NO login temporarily locked after too many failed logins, try again later" || !got.closed {
		t.Errorf("locked bob from a new address: %+v", got)
	}
	if len(upstream.calls()) != before {
		t.Errorf("the locked login reached the upstream")
	}
	// ...while alice from that address gets in.
	if got := nginxIMAPLogin(t, "127.0.0.6", proxy.imap, alice, testUsers[alice]); got.answer != "OK backend: logged in" {
		t.Errorf("alice from bob's new address: %+v", got)
	}

	// nginx escapes the login in Auth-User (a space as %20): the hook
	// counts it and checks it as the client typed it, the name nginx's
	// log, the backends and mailban's commands use.
	carol := "Carol Smith@example.test"
	for i, from := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		if got := nginxIMAPLogin(t, from, proxy.imap, carol, fmt.Sprintf("guess-%d", i)); got.answer != "NO Invalid login or password" {
			t.Fatalf("a wrong password for %q from %s: %+v", carol, from, got)
		}
	}
	waitRefused(t, a, "", "carol smith@example.test", true)
	if got := nginxIMAPLogin(t, "127.0.0.14", proxy.imap, carol, "any"); got.answer != "NO login temporarily locked after too many failed logins, try again later" {
		t.Errorf("locked %q from a new address: %+v", carol, got)
	}

	// Three failures from one address ban it: the next login from it,
	// with a right password, is mailban's refusal.
	for i := range 3 {
		if got := nginxIMAPLogin(t, "127.0.0.7", proxy.imap, fmt.Sprintf("guess%d@example.test", i), "x"); got.answer != "NO Invalid login or password" {
			t.Fatalf("failure %d from 127.0.0.7: %+v", i, got)
		}
	}
	waitRefused(t, a, "127.0.0.7", "", true)
	if got := nginxIMAPLogin(t, "127.0.0.7", proxy.imap, alice, testUsers[alice]); got.answer != "NO too many failed logins from your address, try again later" {
		t.Errorf("alice from the address banned by its failures: %+v", got)
	}

	reg := a.Registry()
	// Events from the hook's report: alice's two successes, the three
	// guesses for bob, for carol and from 127.0.0.7. Refusals are not
	// reports.
	if n := countEvents(t, reg, "hook-nginx"); n != 11 {
		t.Errorf("%v events from nginx's answers, want 11", n)
	}
	if n := hookRequests(t, reg, "nginx", "deny"); n != 4 {
		t.Errorf("nginx denials counted %v, want 4", n)
	}
	if n := hookRequests(t, reg, "nginx", "allow"); n != 2 {
		t.Errorf("nginx logins let through counted %v, want 2", n)
	}
	if got := backend.loginsOf(alice); got != 2 {
		t.Errorf("the backend saw alice log in %d times, want 2", got)
	}
	// nginx logged each refusal with the client's address, as the
	// nginx-mail example's format expects.
	proxy.waitLog(t, `client login failed: "too many failed logins from your address, try again later" while in http auth state, client: 127.0.0.7, server: `+proxy.imap+`, login: "alice@example.test"`)
}

// TestNginxMailProxyAuthWait: with Auth-Wait in a refusal, nginx holds
// the client that long and then lets it try again on the same connection,
// asking again. The upstream's Auth-Wait reaches nginx through the hook, a
// retry with the right password gets in, and both answers are counted;
// mailban's own refusal (nginx.auth-wait) keeps a banned client waiting
// instead of hanging up on it, and every retry is refused again without
// reaching the upstream.
func TestNginxMailProxyAuthWait(t *testing.T) {
	needRealServers(t, "nginx")
	needNginxMailModule(t)
	dir := serverDir(t)
	backend := startIMAPBackend(t)
	upstream := startAuthHTTP(t, backend.addr, "1")
	hookPort := freePort(t)
	a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "3/1h")+fmt.Sprintf(`
sources: []
enforcers:
  hook:
    native: {listen: [%%[1]s/hook.sock]}
    nginx: {listen: ["127.0.0.1:%d"], api-key: "k3y", upstream: "%s/auth", auth-wait: 1s}
`, hookPort, upstream.URL))
	proxy := startNginx(t, fmt.Sprintf("127.0.0.1:%d/mailban", hookPort), "k3y")
	alice, bob := "alice@example.test", "bob@example.test"

	c := dialIMAP(t, "127.0.0.2", proxy.imap)
	if got := c.login(alice, "typo"); got != "NO Invalid login or password" {
		t.Fatalf("alice's typo: %q", got)
	}
	if got := c.login(alice, testUsers[alice]); got != "OK backend: logged in" {
		t.Fatalf("alice's retry on the same connection: %q", got)
	}
	c.cmd("LOGOUT")
	if asked := upstream.calls(); len(asked) != 2 || asked[1].Get("Auth-Login-Attempt") != "2" {
		t.Errorf("the upstream was asked %d times, want 2, the second as attempt 2", len(asked))
	}

	native := dialNative(t, filepath.Join(dir, "hook.sock"))
	if got := native.ask("REPORT fail ip=127.0.0.9 attempts=3 service=imap"); got != "OK" {
		t.Fatalf("REPORT: %s", got)
	}
	waitRefused(t, a, "127.0.0.9", "", true)
	c = dialIMAP(t, "127.0.0.9", proxy.imap)
	for i := range 2 {
		if got := c.login(bob, testUsers[bob]); got != "NO too many failed logins from your address, try again later" {
			t.Errorf("bob from the banned address, try %d: %q", i+1, got)
		}
	}
	c.cmd("LOGOUT")
	if n := len(upstream.calls()); n != 2 {
		t.Errorf("the banned address's logins reached the upstream: %d calls, want 2", n)
	}

	reg := a.Registry()
	if n := countEvents(t, reg, "hook-nginx"); n != 2 {
		t.Errorf("%v events from nginx's answers, want 2 (alice's failure and success)", n)
	}
	if n := hookRequests(t, reg, "nginx", "deny"); n != 2 {
		t.Errorf("nginx denials counted %v, want 2", n)
	}
}

// needNginxMailModule is needRealServers for Debian's mail module, which
// is a package of its own (libnginx-mod-mail).
func needNginxMailModule(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(nginxMailModule); err == nil {
		return
	}
	msg := "needs " + nginxMailModule + " (Debian's libnginx-mod-mail; .ci/run installs it)"
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + msg)
	}
	t.Skip(msg)
}

// nginxProxy is a private nginx: its prefix, configuration, pid file and
// logs in the test's directory, an IMAP proxy on a loopback port.
type nginxProxy struct {
	dir     string
	imap    string // host:port
	mailLog string // the mail {} error_log, at level info
}

// startNginx runs nginx in the foreground (daemon off), its mail proxy
// asking authHTTP (host:port/path) with apiKey in X-API-Key, and stops it
// by pid when the test ends.
func startNginx(t *testing.T, authHTTP, apiKey string) *nginxProxy {
	t.Helper()
	dir := serverDir(t)
	n := &nginxProxy{dir: dir, imap: fmt.Sprintf("127.0.0.1:%d", freePort(t)), mailLog: filepath.Join(dir, "mail-error.log")}
	errorLog := filepath.Join(dir, "error.log")
	conf := fmt.Sprintf(`load_module %[1]s;
daemon off;
pid %[2]s/nginx.pid;
error_log %[3]s info;
worker_processes 1;
events {
    worker_connections 64;
}
mail {
    error_log %[4]s info;
    auth_http %[5]s;
    auth_http_header X-API-Key %[6]s;
    auth_http_timeout 10s;
    server {
        listen %[7]s;
        protocol imap;
        proxy on;
        imap_auth plain login;
    }
}
`, nginxMailModule, dir, errorLog, n.mailLog, authHTTP, apiKey, n.imap)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -e: the log nginx writes before it reads the configuration, which
	// would otherwise be the host's /var/log/nginx/error.log. With daemon
	// off the master is our child, and stopping it stops its worker.
	cmd := exec.Command("nginx", "-p", dir, "-c", confPath, "-e", errorLog)
	exited, out := startServer(t, dir, "nginx master", cmd, nil, errorLog, n.mailLog)
	waitListening(t, n.imap, exited, errorLog, out)
	return n
}

// waitLog waits until nginx's mail log has a line containing want (nginx
// writes it after answering the client).
func (n *nginxProxy) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(n.mailLog)
		if strings.Contains(string(data), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx's mail log has no line with\n%s\nit has\n%s", want, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// imapClient is one IMAP connection from a chosen loopback address.
type imapClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	tags int
}

func dialIMAP(t *testing.T, from, addr string) *imapClient {
	t.Helper()
	c := &imapClient{t: t, conn: dialFrom(t, from, addr)}
	t.Cleanup(func() { c.conn.Close() })
	c.r = bufio.NewReader(c.conn)
	if l, err := c.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("IMAP greeting %q %v", l, err)
	}
	return c
}

// cmd sends a command under a new tag and returns the tagged answer,
// without the tag.
func (c *imapClient) cmd(format string, args ...any) string {
	c.t.Helper()
	c.tags++
	tag := fmt.Sprintf("a%d", c.tags)
	fmt.Fprintf(c.conn, "%s "+format+"\r\n", append([]any{tag}, args...)...)
	for range 100 {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("waiting for the answer to %s: %v", fmt.Sprintf(format, args...), err)
		}
		if strings.HasPrefix(l, tag+" ") {
			return strings.TrimSpace(strings.TrimPrefix(l, tag+" "))
		}
	}
	c.t.Fatalf("no answer to %s in 100 lines", fmt.Sprintf(format, args...))
	return ""
}

func (c *imapClient) login(user, pass string) string {
	c.t.Helper()
	return c.cmd("LOGIN %s %s", imapQuote(user), imapQuote(pass))
}

// closed reports whether the server hung up: the next read ends without
// data.
func (c *imapClient) closed() bool {
	_, err := c.r.ReadByte()
	return err == io.EOF
}

// nginxLogin is what the client saw of one LOGIN through nginx.
type nginxLogin struct {
	answer     string // the answer to LOGIN
	afterLogin string // once logged in, the answer to NOOP (the backend's)
	closed     bool   // after a refused LOGIN, nginx hung up
}

// nginxIMAPLogin logs in once through nginx from the address from; once
// in, it sends NOOP, which only the backend answers, and logs out.
func nginxIMAPLogin(t *testing.T, from, addr, user, pass string) nginxLogin {
	t.Helper()
	c := dialIMAP(t, from, addr)
	defer c.conn.Close()
	got := nginxLogin{answer: c.login(user, pass)}
	if !strings.HasPrefix(got.answer, "OK") {
		got.closed = c.closed()
		return got
	}
	got.afterLogin = c.cmd("NOOP")
	c.cmd("LOGOUT")
	return got
}

// imapBackend is the smallest IMAP server nginx can proxy to: a greeting,
// LOGIN as nginx sends it (two synchronizing literals), NOOP and LOGOUT.
// It accepts testUsers.
type imapBackend struct {
	addr string
	mu   sync.Mutex
	in   map[string]int // logins accepted, per user
}

func startIMAPBackend(t *testing.T) *imapBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &imapBackend{addr: l.Addr().String(), in: map[string]int{}}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns[c] = true
			connsMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		connsMu.Lock()
		for c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return b
}

func (b *imapBackend) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	io.WriteString(c, "* OK backend ready\r\n")
	for range 100 {
		args, err := readIMAPCommand(c, r)
		if err != nil || len(args) < 2 {
			return
		}
		tag, cmd := args[0], strings.ToUpper(args[1])
		switch {
		case cmd == "LOGIN" && len(args) == 4:
			if p, ok := testUsers[args[2]]; ok && p == args[3] {
				b.mu.Lock()
				b.in[args[2]]++
				b.mu.Unlock()
				fmt.Fprintf(c, "%s OK backend: logged in\r\n", tag)
			} else {
				fmt.Fprintf(c, "%s NO backend: wrong password\r\n", tag)
			}
		case cmd == "NOOP":
			fmt.Fprintf(c, "%s OK backend: noop\r\n", tag)
		case cmd == "LOGOUT":
			fmt.Fprintf(c, "* BYE\r\n%s OK backend: bye\r\n", tag)
			return
		default:
			fmt.Fprintf(c, "%s BAD backend: unknown command\r\n", tag)
		}
	}
}

func (b *imapBackend) loginsOf(user string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.in[user]
}

// readIMAPCommand reads one command into its words: atoms, quoted
// strings, and synchronizing literals ({n}, answered with a continuation),
// which is how nginx sends the login and the password.
func readIMAPCommand(w io.Writer, r *bufio.Reader) ([]string, error) {
	var args []string
	for range 10 { // a line, then one more per literal
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		literal := -1
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}") {
			if n, err := strconv.Atoi(line[i+1 : len(line)-1]); err == nil && n >= 0 && n < 4096 {
				literal, line = n, line[:i]
			}
		}
		args = append(args, imapWords(line)...)
		if literal < 0 {
			return args, nil
		}
		io.WriteString(w, "+ go ahead\r\n")
		buf := make([]byte, literal)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf))
	}
	return nil, fmt.Errorf("too many literals")
}

// imapWords splits atoms and quoted strings.
func imapWords(s string) []string {
	var words []string
	for s = strings.TrimLeft(s, " "); s != ""; s = strings.TrimLeft(s, " ") {
		if s[0] != '"' {
			w, rest, _ := strings.Cut(s, " ")
			words, s = append(words, w), rest
			continue
		}
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		words, s = append(words, b.String()), s[min(i+1, len(s)):]
	}
	return words
}

// authHTTP is the auth_http service nginx used before mailban: testUsers
// go to the backend, anything else is refused, with Auth-Wait: wait
// unless wait is "".
type authHTTP struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
}

func startAuthHTTP(t *testing.T, backend, wait string) *authHTTP {
	t.Helper()
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		t.Fatal(err)
	}
	u := &authHTTP{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		if p, ok := testUsers[r.Header.Get("Auth-User")]; ok && p == r.Header.Get("Auth-Pass") {
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", host)
			w.Header().Set("Auth-Port", port)
			return
		}
		w.Header().Set("Auth-Status", "Invalid login or password")
		if wait != "" {
			w.Header().Set("Auth-Wait", wait)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *authHTTP) calls() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}
