package hook_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// mailbanConfig is the agent configuration the real-server tests share:
// loopback is not allowlisted (the test clients are 127.0.0.x), logins lock
// after 3 failures, addresses are banned after ipThreshold. %[1]s is the
// test's directory.
const mailbanConfig = `
state: {path: %%[1]s/state.db}
rules:
  ip: {threshold: "%s"}
  login: {threshold: "3/1h", lock-for: 1h, success-memory: 1d}
allowlist: {loopback: false, host-addresses: false}
metrics: {listen: ""}
`

// TestDovecotAuthPolicy runs a real Dovecot 2.3 asking the hook
// (auth_policy_server_url) and reporting to it: a login locked by
// failures from several addresses is refused from a new address, even with
// its right password, while the address that logged in as it before still
// gets in; the refused address, having failed against a locked login, is
// banned; the same wrong password again counts once; and the reports
// became events.
func TestDovecotAuthPolicy(t *testing.T) {
	needRealServers(t, "dovecot")
	dir := serverDir(t)
	port := freePort(t)
	a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "100/1h")+fmt.Sprintf(`
sources: []
enforcers:
  hook:
    native: {listen: [%%[1]s/hook.sock]}
    dovecot: {listen: ["127.0.0.1:%d"], api-key: "s3cret-key"}
`, port))
	d := startDovecot(t, dovecotOptions{policyURL: fmt.Sprintf("http://127.0.0.1:%d/", port), apiKey: "s3cret-key"})
	alice, right := "alice@example.test", d.passwords["alice@example.test"]

	// Alice logs in from her usual address.
	if got := imapLogins(t, "127.0.0.2", d.imap, alice, right); !strings.HasPrefix(got[0], "OK") {
		t.Fatalf("alice's first login: %q", got)
	}
	// Someone guesses her password from three other addresses: locked.
	for i, from := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		got := imapLogins(t, from, d.imap, alice, fmt.Sprintf("guess-%d", i))
		if !strings.HasPrefix(got[0], "NO") {
			t.Fatalf("a wrong password from %s: %q", from, got)
		}
	}
	waitRefused(t, a, "", alice, true)

	// From a new address even the right password is refused...
	got := imapLogins(t, "127.0.0.6", d.imap, alice, right)
	if !strings.HasPrefix(got[0], "NO") || !strings.Contains(got[0], "login temporarily locked") {
		t.Errorf("the right password from a new address: %q, want a refusal naming the lock", got)
	}
	// ...and that address, having failed against a locked login, is banned.
	waitRefused(t, a, "127.0.0.6", "", true)
	got = imapLogins(t, "127.0.0.6", d.imap, "bob@example.test", d.passwords["bob@example.test"])
	if !strings.HasPrefix(got[0], "NO") || !strings.Contains(got[0], "too many failed logins from your address") {
		t.Errorf("another login from the banned address: %q", got)
	}
	// Her usual address still gets in.
	if got := imapLogins(t, "127.0.0.2", d.imap, alice, right); !strings.HasPrefix(got[0], "OK") {
		t.Errorf("alice from her usual address: %q", got)
	}

	// A phone with a stale password: the same wrong password three times
	// from one address counts once.
	imapLogins(t, "127.0.0.7", d.imap, "bob@example.test", "old-password", "old-password", "old-password")

	reg := a.Registry()
	reports := hookRequests(t, reg, "dovecot", "report")
	repeats := hookRequests(t, reg, "dovecot", "repeat")
	// Reports: alice's two successes, three guesses, the refused login,
	// bob's refused login from the banned address and bob's first stale try.
	if reports != 8 || repeats != 2 {
		t.Errorf("dovecot reports counted %v (want 8), repeats %v (want 2)", reports, repeats)
	}
	if n := countEvents(t, reg, "hook-dovecot"); n != 8 {
		t.Errorf("%v events from the report feed, want 8", n)
	}
}

// TestWholeLoopThroughDovecotsLog: failed logins against a real Dovecot are
// written to its log, mailban reads them there (the report feed is off),
// bans the address, and Dovecot's next connection from it is refused by the
// hook before any password is checked.
func TestWholeLoopThroughDovecotsLog(t *testing.T) {
	needRealServers(t, "dovecot")
	dir := serverDir(t)
	port := freePort(t)
	d := startDovecot(t, dovecotOptions{policyURL: fmt.Sprintf("http://127.0.0.1:%d/", port), apiKey: "k3y"})
	a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "3/1h")+fmt.Sprintf(`
sources:
  - name: dovecot
    paths: [%s]
    formats: [dovecot]
    start-at: beginning
enforcers:
  hook:
    native: {listen: []}
    dovecot: {listen: ["127.0.0.1:%d"], api-key: "k3y", report: false}
`, d.log, port))

	bob := "bob@example.test"
	got := imapLogins(t, "127.0.0.9", d.imap, bob, "wrong-1", "wrong-2", "wrong-3")
	if len(got) != 3 || !strings.HasPrefix(got[2], "NO") {
		t.Fatalf("three wrong passwords: %q", got)
	}
	waitRefused(t, a, "127.0.0.9", "", true)
	got = imapLogins(t, "127.0.0.9", d.imap, bob, d.passwords[bob])
	if !strings.HasPrefix(got[0], "NO") || !strings.Contains(got[0], "too many failed logins from your address") {
		t.Errorf("the right password from the banned address: %q", got)
	}
	// (bob's three failures locked him too: another login shows that other
	// addresses still get in.)
	alice := "alice@example.test"
	if got := imapLogins(t, "127.0.0.10", d.imap, alice, d.passwords[alice]); !strings.HasPrefix(got[0], "OK") {
		t.Errorf("alice from another address: %q", got)
	}
	if n := countEvents(t, a.Registry(), "dovecot"); n < 1 {
		t.Errorf("no events from Dovecot's log")
	}
	if n := countEvents(t, a.Registry(), "hook-dovecot"); n != 0 {
		t.Errorf("%v events from the report feed, which is off", n)
	}
}

// TestPostfixPolicyDelegation runs a real Postfix asking the hook at
// CONNECT, MAIL and RCPT (check_policy_service, smtpd_delay_reject = no),
// with SASL through a real Dovecot that does not ask mailban: a banned
// client gets 421 instead of the greeting; a locked login authenticates
// (its password is right) but its mail is refused at MAIL; another login
// goes through.
func TestPostfixPolicyDelegation(t *testing.T) {
	needRealServers(t, "postfix", "dovecot")
	dir := serverDir(t)
	d := startDovecot(t, dovecotOptions{forPostfix: true})
	p := startPostfix(t, d.authPath)
	a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "3/1h")+fmt.Sprintf(`
sources: []
enforcers:
  hook:
    native: {listen: [%%[1]s/hook.sock]}
    postfix: {listen: [%s], group: postfix}
`, p.policy))

	banAndLockOverNative(t, a, dir)

	s, greeting := dialSMTP(t, "127.0.0.5", p.smtp)
	if !strings.HasPrefix(greeting, "421 4.7.0 ") || !strings.Contains(greeting, "too many failed logins from your address") {
		t.Errorf("banned client's greeting: %q, want 421 4.7.0", greeting)
	}
	if more := s.reply(); more != "" {
		t.Errorf("after 421 the server said %q, want a hang-up", more)
	}

	s, greeting = dialSMTP(t, "127.0.0.6", p.smtp)
	if !strings.HasPrefix(greeting, "220 ") {
		t.Fatalf("greeting %q", greeting)
	}
	s.cmd("EHLO client.example.test")
	if got := s.cmd(plainAuth("bob@example.test", d.passwords["bob@example.test"])); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("bob's AUTH: %q, want 235 (Dovecot does not ask mailban here)", got)
	}
	if got := s.cmd("MAIL FROM:<bob@example.test>"); !strings.HasPrefix(got, "450 4.7.1 ") || !strings.Contains(got, "login temporarily locked") {
		t.Errorf("locked login at MAIL: %q, want 450 4.7.1", got)
	}

	s, _ = dialSMTP(t, "127.0.0.6", p.smtp)
	s.cmd("EHLO client.example.test")
	if got := s.cmd(plainAuth("alice@example.test", d.passwords["alice@example.test"])); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("alice's AUTH: %q", got)
	}
	if got := s.cmd("MAIL FROM:<alice@example.test>"); !strings.HasPrefix(got, "250 ") {
		t.Errorf("alice at MAIL: %q", got)
	}
	if got := s.cmd("RCPT TO:<someone@example.org>"); !strings.HasPrefix(got, "250 ") {
		t.Errorf("alice at RCPT: %q", got)
	}
	s.cmd("QUIT")
	if n := hookRequests(t, a.Registry(), "postfix", "deny"); n != 2 {
		t.Errorf("postfix denials counted %v, want 2", n)
	}
}

type nativeClient struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialNative(t *testing.T, path string) *nativeClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &nativeClient{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *nativeClient) ask(req string) string {
	c.t.Helper()
	fmt.Fprintf(c, "%s\n", req)
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSuffix(l, "\n")
}

// metricSum adds up the series of a metric whose labels include labels.
func metricSum(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func hookRequests(t *testing.T, reg prometheus.Gatherer, protocol, outcome string) float64 {
	return metricSum(t, reg, "mailban_hook_requests_total", map[string]string{"protocol": protocol, "outcome": outcome})
}

func countEvents(t *testing.T, reg prometheus.Gatherer, format string) float64 {
	return metricSum(t, reg, "mailban_events_total", map[string]string{"format": format})
}
