package hook_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPostfixMilter runs a real Postfix with the hook as its milter
// (smtpd_milters, with the README's settings), over a unix socket in
// Postfix's queue directory and over loopback TCP, and SASL through a real
// Dovecot that does not ask mailban: a banned client gets 421 instead of
// the greeting and is hung up on, and Postfix logs mailban's 421 4.7.0 and
// reason; a locked login authenticates (its
// password is right) but its mail is refused with 450 4.7.1 at MAIL; a
// clean client with another login sends its message.
func TestPostfixMilter(t *testing.T) {
	needRealServers(t, "postfix", "dovecot")
	d := startDovecot(t, dovecotOptions{forPostfix: true})
	for _, transport := range []string{"unix", "inet"} {
		t.Run(transport, func(t *testing.T) {
			dir := serverDir(t)
			var p *postfix
			var listen string
			if transport == "unix" {
				p = startPostfixWith(t, d.authPath, "unix:private/mailban-milter")
				listen = p.milter
			} else {
				port := freePort(t)
				listen = fmt.Sprintf("127.0.0.1:%d", port)
				p = startPostfixWith(t, d.authPath, "inet:"+listen)
			}
			a := runAgent(t, dir, fmt.Sprintf(mailbanConfig, "3/1h")+fmt.Sprintf(`
sources: []
enforcers:
  hook:
    native: {listen: [%%[1]s/hook.sock]}
    milter: {listen: ["%s"], group: postfix}
`, listen))

			banAndLockOverNative(t, a, dir)

			// At CONNECT Postfix answers a milter's 421 with its own text
			// ("421 <myhostname> Service unavailable - try again later",
			// smtpd.c) and logs the milter's.
			s, greeting := dialSMTP(t, "127.0.0.5", p.smtp)
			if !strings.HasPrefix(greeting, "421 ") {
				t.Errorf("banned client's greeting: %q, want 421", greeting)
			}
			if more := s.reply(); more != "" {
				t.Errorf("after 421 the server said %q, want a hang-up", more)
			}
			waitLogLine(t, p.log, "milter-reject: CONNECT from unknown[127.0.0.5]: 421 4.7.0 too many failed logins from your address")

			s, greeting = dialSMTP(t, "127.0.0.6", p.smtp)
			if !strings.HasPrefix(greeting, "220 ") {
				t.Fatalf("greeting %q", greeting)
			}
			s.cmd("EHLO client.example.test")
			if got := s.cmd(plainAuth("bob@example.test", d.passwords["bob@example.test"])); !strings.HasPrefix(got, "235 ") {
				t.Fatalf("bob's AUTH: %q, want 235 (Dovecot does not ask mailban here)", got)
			}
			if got := s.cmd("MAIL FROM:<bob@example.test>"); !strings.HasPrefix(got, "450 4.7.1 ") || !strings.Contains(got, "login temporarily locked") {
				t.Errorf("locked login at MAIL: %q, want 450 4.7.1 and the reason", got)
			}

			s, _ = dialSMTP(t, "127.0.0.6", p.smtp)
			s.cmd("EHLO client.example.test")
			if got := s.cmd(plainAuth("alice@example.test", d.passwords["alice@example.test"])); !strings.HasPrefix(got, "235 ") {
				t.Fatalf("alice's AUTH: %q", got)
			}
			sendMessage(t, s, "alice@example.test", "someone@example.org")
			// A second message on the same connection is checked anew.
			sendMessage(t, s, "alice@example.test", "someone-else@example.org")
			s.cmd("QUIT")

			reg := a.Registry()
			if n := hookRequests(t, reg, "milter", "deny"); n != 2 {
				t.Errorf("milter denials counted %v, want 2", n)
			}
			// CONNECT of bob's session, CONNECT and two MAILs of alice's.
			if n := hookRequests(t, reg, "milter", "allow"); n != 4 {
				t.Errorf("milter allowances counted %v, want 4", n)
			}
			if n := hookRequests(t, reg, "milter", "error"); n != 0 {
				t.Errorf("milter errors counted %v, want 0", n)
			}
		})
	}
}

// TestPostfixMilterFailsOpen: with milter_default_action = accept, as the
// README configures it, Postfix takes mail when mailban is not there to
// answer.
func TestPostfixMilterFailsOpen(t *testing.T) {
	needRealServers(t, "postfix", "dovecot")
	d := startDovecot(t, dovecotOptions{forPostfix: true})
	p := startPostfixWith(t, d.authPath, fmt.Sprintf("inet:127.0.0.1:%d", freePort(t))) // nobody listens
	s, greeting := dialSMTP(t, "127.0.0.6", p.smtp)
	if !strings.HasPrefix(greeting, "220 ") {
		t.Fatalf("greeting without mailban: %q", greeting)
	}
	s.cmd("EHLO client.example.test")
	if got := s.cmd(plainAuth("alice@example.test", d.passwords["alice@example.test"])); !strings.HasPrefix(got, "235 ") {
		t.Fatalf("alice's AUTH: %q", got)
	}
	sendMessage(t, s, "alice@example.test", "someone@example.org")
	s.cmd("QUIT")
}

// sendMessage sends one small message and wants it queued.
func sendMessage(t *testing.T, s *smtpSession, from, to string) {
	t.Helper()
	if got := s.cmd("MAIL FROM:<" + from + ">"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("MAIL FROM:<%s>: %q", from, got)
	}
	if got := s.cmd("RCPT TO:<" + to + ">"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("RCPT TO:<%s>: %q", to, got)
	}
	if got := s.cmd("DATA"); !strings.HasPrefix(got, "354 ") {
		t.Fatalf("DATA: %q", got)
	}
	if got := s.cmd("Subject: test\r\n\r\nhello\r\n."); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("end of data: %q", got)
	}
}

// waitLogLine waits up to 10 seconds for a line containing want to appear
// in a log file Postfix writes through postlogd, a moment after the event.
func waitLogLine(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s has no line with %q", path, want)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
