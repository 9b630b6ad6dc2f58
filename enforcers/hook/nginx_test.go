package hook

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// authUpstream is an auth_http service as nginx's documentation describes
// one: alice@example.test with "secret" goes to 192.0.2.25:143, anyone
// else is refused with a wait.
type authUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
}

func newAuthUpstream(t *testing.T) *authUpstream {
	u := &authUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		if r.Header.Get("Auth-User") == "alice@example.test" && r.Header.Get("Auth-Pass") == "secret" {
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", "192.0.2.25")
			w.Header().Set("Auth-Port", "143")
			return
		}
		w.Header().Set("Auth-Status", "Invalid login or password")
		w.Header().Set("Auth-Wait", "3")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *authUpstream) calls() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}

// nginxAsk sends an auth_http request as nginx 1.22 does.
func (h *testHook) nginxAsk(t *testing.T, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+h.addr(t, protoNginx, "tcp").String()+"/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"X-API-Key": "nginx-key", "Auth-Method": "plain", "Auth-Protocol": "imap",
		"Auth-Login-Attempt": "1", "Client-Host": "[UNAVAILABLE]",
	}
	for k, v := range base {
		req.Header.Set(k, v)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestNginxRefusesOrChains(t *testing.T) {
	up := newAuthUpstream(t)
	h := newTestHook(t, func(c *Config) { c.Nginx.Upstream = up.URL + "/mail-auth" })
	h.ban(t, "203.0.113.7")
	h.lock(t, "carol@example.test")

	for _, tc := range []struct {
		name     string
		hdr      map[string]string
		status   string
		more     map[string]string
		upstream bool
	}{
		{"good login, passed on", map[string]string{"Client-IP": "192.0.2.5", "Auth-User": "alice@example.test", "Auth-Pass": "secret"},
			"OK", map[string]string{"Auth-Server": "192.0.2.25", "Auth-Port": "143"}, true},
		{"wrong password, the upstream's answer", map[string]string{"Client-IP": "192.0.2.5", "Auth-User": "alice@example.test", "Auth-Pass": "guess"},
			"Invalid login or password", map[string]string{"Auth-Wait": "3"}, true},
		{"banned address", map[string]string{"Client-IP": "203.0.113.7", "Auth-User": "alice@example.test", "Auth-Pass": "secret"},
			"too many failed logins from your address, try again later", map[string]string{"Auth-Wait": "", "Auth-Error-Code": ""}, false},
		{"locked login", map[string]string{"Client-IP": "192.0.2.5", "Auth-User": "Carol@example.test", "Auth-Pass": "x"},
			"login temporarily locked after too many failed logins, try again later", nil, false},
		{"banned address over SMTP", map[string]string{"Client-IP": "203.0.113.7", "Auth-User": "alice@example.test", "Auth-Protocol": "smtp"},
			"too many failed logins from your address, try again later", map[string]string{"Auth-Error-Code": "454 4.7.0"}, false},
	} {
		before := len(up.calls())
		code, got := h.nginxAsk(t, tc.hdr)
		if code != 200 || got.Get("Auth-Status") != tc.status {
			t.Errorf("%s: %d Auth-Status %q, want 200 %q", tc.name, code, got.Get("Auth-Status"), tc.status)
		}
		for k, v := range tc.more {
			if got.Get(k) != v {
				t.Errorf("%s: %s %q, want %q", tc.name, k, got.Get(k), v)
			}
		}
		if asked := len(up.calls()) > before; asked != tc.upstream {
			t.Errorf("%s: upstream asked %v, want %v", tc.name, asked, tc.upstream)
		}
	}

	// What the upstream saw: nginx's headers, but not mailban's API key.
	first := up.calls()[0]
	for k, v := range map[string]string{"Auth-User": "alice@example.test", "Auth-Pass": "secret", "Client-Ip": "192.0.2.5",
		"Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "X-Api-Key": ""} {
		if first.Get(k) != v {
			t.Errorf("upstream got %s %q, want %q", k, first.Get(k), v)
		}
	}
	// The upstream's answers were counted: one success, one failure.
	var kinds []string
	for _, e := range h.pipe.Events() {
		if e.Format == "hook-nginx" {
			kinds = append(kinds, e.Kind.String()+" "+e.Addr.String()+" "+e.Login+" "+string(e.Service))
		}
	}
	if want := "auth_success 192.0.2.5 alice@example.test imap\nauth_failure 192.0.2.5 alice@example.test imap"; strings.Join(kinds, "\n") != want {
		t.Errorf("events:\n%s\nwant\n%s", strings.Join(kinds, "\n"), want)
	}
}

func TestNginxAuthWait(t *testing.T) {
	up := newAuthUpstream(t)
	h := newTestHook(t, func(c *Config) {
		c.Nginx.Upstream = up.URL
		c.Nginx.AuthWait = 2500_000_000 // 2.5 s: rounded up
	})
	h.ban(t, "203.0.113.7")
	_, got := h.nginxAsk(t, map[string]string{"Client-IP": "203.0.113.7", "Auth-User": "x"})
	if got.Get("Auth-Wait") != "3" {
		t.Errorf("Auth-Wait %q, want 3", got.Get("Auth-Wait"))
	}
}

func TestNginxUpstreamDown(t *testing.T) {
	up := newAuthUpstream(t)
	url := up.URL
	up.Close()
	h := newTestHook(t, func(c *Config) { c.Nginx.Upstream = url })
	code, got := h.nginxAsk(t, map[string]string{"Client-IP": "192.0.2.5", "Auth-User": "alice@example.test", "Auth-Pass": "secret"})
	if code != 200 || got.Get("Auth-Status") != "Temporary server problem, try again later" || got.Get("Auth-Wait") != "3" {
		t.Errorf("%d %v", code, got)
	}
	if n := len(h.pipe.Events()); n != 0 {
		t.Errorf("an unreachable upstream produced %d events", n)
	}
}

func TestNginxMalformed(t *testing.T) {
	up := newAuthUpstream(t)
	h := newTestHook(t, func(c *Config) {
		c.Nginx.Upstream = up.URL
		c.Limits.MaxRequest = 2048
	})
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"no API key", map[string]string{"X-API-Key": "", "Client-IP": "192.0.2.5"}, 403},
		{"wrong API key", map[string]string{"X-API-Key": "guess", "Client-IP": "192.0.2.5"}, 403},
		{"no Client-IP", map[string]string{"Auth-User": "alice"}, 400},
		{"Client-IP not an address", map[string]string{"Client-IP": "192.0.2.500", "Auth-User": "alice"}, 400},
		{"headers too large", map[string]string{"Client-IP": "192.0.2.5", "Auth-User": strings.Repeat("a", 10000)}, 431}, // net/http allows 4 KiB over the limit,
	} {
		if code, _ := h.nginxAsk(t, tc.hdr); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+h.addr(t, protoNginx, "tcp").String()+"/auth", strings.NewReader("x"))
	req.Header.Set("X-API-Key", "nginx-key")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("malformed requests reached the upstream %d times", n)
	}
	if code, got := h.nginxAsk(t, map[string]string{"Client-IP": "192.0.2.5", "Auth-User": "alice@example.test", "Auth-Pass": "secret"}); code != 200 || got.Get("Auth-Status") != "OK" {
		t.Errorf("after all that: %d %v", code, got)
	}
}

// TestNginxLoginUnescaped: nginx sends Auth-User escaped (a space as %20,
// a % as %25: seen from nginx 1.22 in TestNginxMailProxy). The hook checks
// and counts the login the client typed, and passes the header upstream
// as nginx sent it.
func TestNginxLoginUnescaped(t *testing.T) {
	up := newAuthUpstream(t)
	h := newTestHook(t, func(c *Config) { c.Nginx.Upstream = up.URL })
	h.lock(t, "carol smith@example.test")
	for _, tc := range []struct{ sent, status string }{
		{"Carol%20Smith@example.test", "login temporarily locked after too many failed logins, try again later"},
		{"dave%25x@example.test", "Invalid login or password"},
		{"%zz@example.test", "Invalid login or password"}, // not nginx's: kept as it came
	} {
		if _, got := h.nginxAsk(t, map[string]string{"Client-IP": "192.0.2.5", "Auth-User": tc.sent, "Auth-Pass": "x"}); got.Get("Auth-Status") != tc.status {
			t.Errorf("Auth-User %s: Auth-Status %q, want %q", tc.sent, got.Get("Auth-Status"), tc.status)
		}
	}
	var logins []string
	for _, e := range h.pipe.Events() {
		if e.Format == "hook-nginx" {
			logins = append(logins, e.Login)
		}
	}
	if got, want := strings.Join(logins, " | "), "dave%x@example.test | %zz@example.test"; got != want {
		t.Errorf("logins counted: %s, want %s", got, want)
	}
	if calls := up.calls(); len(calls) != 2 || calls[0].Get("Auth-User") != "dave%25x@example.test" {
		t.Errorf("the upstream did not get Auth-User as nginx sent it: %v", calls)
	}
}
