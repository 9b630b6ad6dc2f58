package parsers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchLines reads a generated log (see testdata/logs/gen/README.md) into memory.
func benchLines(b *testing.B, name string) []string {
	b.Helper()
	data, err := os.ReadFile(filepath.Join(genDir, name))
	if err != nil {
		b.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// BenchmarkParse measures one line per iteration through every preset (what
// a source uses by default) and reports lines/s (target: ≥ 2,000,000 on one
// core for the realistic mixes). Run: go test ./parsers -run '^$' -bench . -benchmem
func BenchmarkParse(b *testing.B) {
	arrival := genStart.Add(72 * time.Hour)
	noMatch := []string{
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/qmgr[812]: 0A1B2C3D4E: removed",
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/smtpd[1000]: disconnect from unknown[203.0.113.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/lmtp[1001]: 0A1B2C3D4E: to=<alice@example.com>, relay=mx1[private/dovecot-lmtp], delay=0.2, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> abc Saved)",
		"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: imap(alice@example.com)<1234><abcdefgh>: Disconnected: Logged out in=120 out=3400",
		"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: auth: passwd-file(admin@example.com,203.0.113.7): Password mismatch",
	}
	cases := []struct {
		name  string
		lines func(b *testing.B) []string
	}{
		{"mix-rfc3339", func(b *testing.B) []string { return benchLines(b, "default.log") }},
		{"mix-rfc3164-auth-verbose", func(b *testing.B) []string { return benchLines(b, "verbose.log") }},
		{"no-match", func(*testing.B) []string { return noMatch }},
		{"postfix-failure", func(*testing.B) []string {
			return []string{"Nov 25 19:45:24 mail postfix/submission/smtpd[19780]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.test"}
		}},
		{"dovecot-failure", func(*testing.B) []string {
			return []string{"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: imap-login: Disconnected: Connection closed (auth failed, 3 attempts in 6 secs): user=<bob@example.com>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.10, TLS, session=<XTN8ER9hl+d/AAAH>"}
		}},
		{"dovecot-login", func(*testing.B) []string {
			return []string{"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: imap-login: Login: user=<alice@example.com>, method=PLAIN, rip=203.0.113.2, lip=192.0.2.10, mpid=4242, TLS, session=<XTN8ER9hl+d/AAAH>"}
		}},
		// Lines without a syslog header are offered to every plain format
		// (exim's main log, Dovecot's own log file, Stalwart's, webmail logs).
		{"plain-exim-mainlog", func(*testing.B) []string { return plainLines(b, "exim-mainlog") }},
		{"plain-dovecot-log-path", func(*testing.B) []string { return plainLines(b, "dovecot-log-path") }},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			p := presetParser(b, time.UTC, presetNames...)
			lines := bc.lines(b)
			var bytes int64
			for _, l := range lines {
				bytes += int64(len(l))
			}
			b.SetBytes(bytes / int64(len(lines)))
			events, i := 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok := p.Parse(lines[i], arrival); ok {
					events++
				}
				if i++; i == len(lines) {
					i = 0
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
			b.ReportMetric(float64(events)/float64(b.N), "events/line")
		})
	}
}

// plainLines is a realistic mix of lines without a syslog header: mostly
// deliveries and logins, a few failures.
func plainLines(b *testing.B, kind string) []string {
	b.Helper()
	switch kind {
	case "exim-mainlog":
		return []string{
			"2026-11-25 20:44:02 1xWJnd-0000Tc-3n <= carol@example.net H=mx.example.net [192.0.2.77] P=esmtp S=2048 id=ghi@example.net",
			"2026-11-25 20:44:03 1xWJnd-0000Tc-3n => dave <dave@example.test> R=local_user T=mail_spool",
			"2026-11-25 20:44:03 1xWJnd-0000Tc-3n Completed",
			"2026-11-25 20:44:04 SMTP connection from mx.example.net [192.0.2.77]:41234 I=[192.0.2.10]:25 closed by QUIT",
			"2026-11-25 20:44:05 1xWJnd-0000Td-4o <= alice@example.test H=(alice-laptop) [203.0.113.2] P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=dovecot_plain:alice@example.test S=462 id=abc@example.test",
			"2026-11-25 20:44:06 dovecot_login authenticator failed for (User) [203.0.113.9]:21298 I=[192.0.2.10]:465 Ci=30416: 535 Incorrect authentication data (set_id=info@example.test)",
			"2026-11-25 20:44:07 1xWJnd-0000Td-4o => bob@example.org R=dnslookup T=remote_smtp H=mx.example.org [198.51.100.25] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 Ok: queued as 4F2A\"",
			"2026-11-25 20:44:08 H=(yakult.example.tw) [198.51.100.78]:3755 I=[192.0.2.10]:25 F=spam@example.org rejected RCPT dir@example.test: relay not permitted",
		}
	default:
		return []string{
			"Nov 25 19:45:24 imap(alice@example.test)<19768><Qq1ER9hAAAAA>: Info: Disconnected: Logged out in=120 out=3400",
			"Nov 25 19:45:24 imap-login: Info: Login: user=<alice@example.test>, method=PLAIN, rip=192.0.2.2, lip=192.0.2.1, mpid=19768, TLS, session=<Qq1ER9hAAAAA>",
			"Nov 25 19:45:25 lmtp(bob@example.test)<1114><9cGFpIjZBmhBzcml>: Info: msgid=<829HqAzeAPac8AIu@example.com>: saved mail to INBOX",
			"Nov 25 19:45:26 auth: Info: passwd-file(admin@example.test,203.0.113.7,<XTN8ER9hl+d/AAAH>): unknown user",
			"Nov 25 19:45:27 imap-login: Info: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): user=<admin@example.test>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.1, TLS, session=<XTN8ER9hl+d/AAAH>",
			"Nov 25 19:45:28 pop3(carol@example.test)<4242><abcdEFGH1234+/==>: Info: Disconnected: Logged out top=0/0, retr=1/2048, del=1/1, size=2048",
		}
	}
}
