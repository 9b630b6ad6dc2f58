package hook

import (
	"bufio"
	"bytes"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// FuzzNativeRequest: whatever a line holds, the answer is one line of the
// protocol's own, and nothing panics.
func FuzzNativeRequest(f *testing.F) {
	for _, seed := range []string{
		"CHECK ip=203.0.113.7", "CHECK ip=192.0.2.1 login=alice service=imap", "REPORT fail ip=192.0.2.1 attempts=3",
		"REPORT success ip=192.0.2.1 login=a%20b", "CHECK login=%", "CHECK ip=::ffff:1.2.3.4%25x", "PING", "QUIT",
		"WATCH x", "", "\x00", "CHECK ip=1.2.3.4 ip=1.2.3.4", "report FAIL login=" + strings.Repeat("%41", 50),
	} {
		f.Add(seed)
	}
	h := newTestHook(f, func(c *Config) { c.Postfix.Listen, c.Dovecot.Listen, c.Nginx.Listen = nil, nil, nil })
	h.ban(f, "203.0.113.7")
	answer := regexp.MustCompile(`^(ALLOW|DENY [0-9]+ [^\n]*|OK|PONG|BYE|ERR [^\n]+)\n$`)
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n") {
			return // one line at a time, as readLine hands them over
		}
		var out bytes.Buffer
		lc := &lineConn{w: bufio.NewWriter(&out), lim: DefaultLimits(), started: time.Now()}
		_, next := h.nativeRequest(lc, []byte(line), false)
		lc.w.Flush()
		if next == startWatch {
			if out.Len() != 0 || !strings.EqualFold(strings.TrimSpace(line), "WATCH") {
				t.Errorf("%q started a WATCH and wrote %q", line, out.String())
			}
			return
		}
		if !answer.Match(out.Bytes()) {
			t.Errorf("%q: answer %q", line, out.String())
		}
	})
}

// FuzzPolicyRequest: whatever Postfix (or anyone) sends, a request is read
// whole or refused with an error, within the limits, and nothing panics.
func FuzzPolicyRequest(f *testing.F) {
	f.Add("request=smtpd_access_policy\nclient_address=192.0.2.1\nsasl_username=alice\n\n")
	f.Add("request=smtpd_access_policy\r\nclient_address=::1\r\n\r\n")
	f.Add("request=junk\n\n")
	f.Add("=\n\n")
	f.Add("\n")
	f.Fuzz(func(t *testing.T, in string) {
		lim := DefaultLimits()
		lim.MaxLine, lim.MaxRequest = 64, 1024
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			client.Write([]byte(in))
			client.Close()
		}()
		lc := newLineConn(server, lim)
		for range 100 {
			req, err := readPolicyRequest(lc)
			if err != nil {
				return
			}
			if !req.request {
				t.Fatalf("%q: a request without request=smtpd_access_policy was accepted", in)
			}
		}
	})
}
