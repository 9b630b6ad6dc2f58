package hook

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dovecotBody is what Dovecot 2.3.19 sends with its default attributes.
func dovecotBody(login, remote, pwhash, extra string) string {
	return `{"device_id":"","login":"` + login + `","protocol":"imap","pwhash":"` + pwhash + `","remote":"` + remote +
		`","session_id":"n3AS+CFhkp5/AAAB","tls":false` + extra + `}`
}

func (h *testHook) dovecot(t *testing.T, method, query, key, body string) (int, string) {
	t.Helper()
	url := "http://" + h.addr(t, protoDovecot, "tcp").String() + "/dovecot" + query
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dovecot/auth-policy-client")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestDovecotAllow(t *testing.T) {
	h := newTestHook(t, nil)
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")
	h.succeed(t, "192.0.2.1", "alice@example.test")
	for _, tc := range []struct{ name, body, want string }{
		{"clean", dovecotBody("bob@example.test", "192.0.2.50", "0e7f", ""), `{"status":0}`},
		{"banned address", dovecotBody("bob@example.test", "203.0.113.7", "0e7f", ""),
			`{"status":-1,"msg":"too many failed logins from your address, try again later"}`},
		{"locked login, new address", dovecotBody("alice@example.test", "192.0.2.50", "0e7f", ""),
			`{"status":-1,"msg":"login temporarily locked after too many failed logins, try again later"}`},
		{"locked login, its owner's address", dovecotBody("alice@example.test", "192.0.2.1", "0b26", ""), `{"status":0}`},
		{"locked login, no address", dovecotBody("alice@example.test", "", "0b26", ""),
			`{"status":-1,"msg":"login temporarily locked after too many failed logins, try again later"}`},
		{"unknown attributes and nesting", `{"login":"bob","remote":"192.0.2.5","a":{"b":"c"},"x":"y"}`, `{"status":0}`},
	} {
		code, body := h.dovecot(t, "POST", "?command=allow", "dovecot-key", tc.body)
		if code != 200 || body != tc.want {
			t.Errorf("%s: %d %s, want 200 %s", tc.name, code, body, tc.want)
		}
	}
}

func TestDovecotTarpitsLockedLogins(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Dovecot.Tarpit = 1500 * time.Millisecond })
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")
	if _, body := h.dovecot(t, "POST", "?command=allow", "dovecot-key", dovecotBody("alice@example.test", "192.0.2.50", "", "")); body != `{"status":2}` {
		t.Errorf("locked login: %s, want a 2 s tarpit", body)
	}
	if _, body := h.dovecot(t, "POST", "?command=allow", "dovecot-key", dovecotBody("alice@example.test", "203.0.113.7", "", "")); !strings.HasPrefix(body, `{"status":-1`) {
		t.Errorf("banned address: %s, want a refusal", body)
	}
}

func TestDovecotMalformed(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Limits.MaxRequest = 1024 })
	ok := dovecotBody("bob", "192.0.2.5", "", "")
	for _, tc := range []struct {
		name, method, query, key, body string
		code                           int
	}{
		{"no API key", "POST", "?command=allow", "", ok, 403},
		{"wrong API key", "POST", "?command=allow", "dovecot-kez", ok, 403},
		{"GET", "GET", "?command=allow", "dovecot-key", "", 405},
		{"no command", "POST", "", "dovecot-key", ok, 400},
		{"unknown command", "POST", "?command=deny", "dovecot-key", ok, 400},
		{"not JSON", "POST", "?command=allow", "dovecot-key", "login=bob", 400},
		{"an array", "POST", "?command=allow", "dovecot-key", `["bob"]`, 400},
		{"a number for a string", "POST", "?command=allow", "dovecot-key", `{"login":5}`, 400},
		{"cut off", "POST", "?command=allow", "dovecot-key", `{"login":"bo`, 400},
		{"too large", "POST", "?command=report", "dovecot-key", `{"login":"` + strings.Repeat("x", 2000) + `"}`, 413},
	} {
		code, body := h.dovecot(t, tc.method, tc.query, tc.key, tc.body)
		if code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	if n := len(h.pipe.Events()); n != 0 {
		t.Errorf("%d events from malformed requests", n)
	}
	if code, body := h.dovecot(t, "POST", "?command=allow", "dovecot-key", ok); code != 200 || body != `{"status":0}` {
		t.Errorf("after all that: %d %s", code, body)
	}
}

// TestDovecotReport: reports become events; the same wrong password (same
// pwhash) from the same address for the same login counts once per
// window; internal failures are not the client's and do not count.
func TestDovecotReport(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Dovecot.RepeatWindow = 10 * time.Minute })
	report := func(login, remote, pwhash, extra string) {
		t.Helper()
		code, body := h.dovecot(t, "POST", "?command=report", "dovecot-key", dovecotBody(login, remote, pwhash, extra))
		if code != 200 || body != `{"status":0}` {
			t.Fatalf("report: %d %s", code, body)
		}
	}
	fail := `,"success":false,"policy_reject":false`
	report("Alice@Example.test", "192.0.2.7", "0e7f", fail) // counted
	report("alice@example.test", "192.0.2.7", "0e7f", fail) // the phone again: not counted
	report("alice@example.test", "192.0.2.7", "0e7f", fail) // not counted
	report("alice@example.test", "192.0.2.7", "1234", fail) // another password: counted
	report("alice@example.test", "192.0.2.8", "0e7f", fail) // another address: counted
	report("bob@example.test", "192.0.2.7", "0e7f", fail)   // another login: counted
	report("alice@example.test", "192.0.2.7", "", fail)     // no hash: counted
	report("alice@example.test", "192.0.2.7", "0e7f", `,"success":false,"policy_reject":false,"fail_type":"internal"`)
	report("alice@example.test", "192.0.2.7", "0e7f", `,"success":false,"policy_reject":true`) // refused by us: a repeat still
	report("alice@example.test", "192.0.2.9", "5555", `,"success":true,"policy_reject":false`)
	h.clock.Advance(10 * time.Minute)
	report("alice@example.test", "192.0.2.7", "0e7f", fail) // a new window: counted

	var got []string
	for _, e := range h.pipe.Events() {
		got = append(got, e.Kind.String()+" "+e.Addr.String()+" "+e.Login+" "+string(e.Service)+" "+e.Format)
	}
	want := []string{
		"auth_failure 192.0.2.7 alice@example.test imap hook-dovecot",
		"auth_failure 192.0.2.7 alice@example.test imap hook-dovecot",
		"auth_failure 192.0.2.8 alice@example.test imap hook-dovecot",
		"auth_failure 192.0.2.7 bob@example.test imap hook-dovecot",
		"auth_failure 192.0.2.7 alice@example.test imap hook-dovecot",
		"auth_success 192.0.2.9 alice@example.test imap hook-dovecot",
		"auth_failure 192.0.2.7 alice@example.test imap hook-dovecot",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	m := h.m.proto[protoDovecot]
	for o, want := range map[outcome]float64{outReport: 7, outRepeat: 3, outIgnored: 1} {
		if got := testutil.ToFloat64(m.requests[o]); got != want {
			t.Errorf("%s counted %v, want %v", outcomeNames[o], got, want)
		}
	}
}

func TestDovecotReportOff(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Dovecot.Report = false })
	h.dovecot(t, "POST", "?command=report", "dovecot-key", dovecotBody("alice", "192.0.2.7", "0e7f", `,"success":false`))
	if n := len(h.pipe.Events()); n != 0 {
		t.Errorf("%d events with reports off", n)
	}
}
