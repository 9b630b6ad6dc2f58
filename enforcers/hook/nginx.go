package hook

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mailban/mailban/parsers"
)

// nginx mail auth_http (ngx_mail_auth_http_module): nginx asks with a GET
// whose headers say who logs in (Auth-User, Auth-Pass, Auth-Protocol,
// Client-IP, ...), and reads only the answer's headers: Auth-Status: OK
// with Auth-Server and Auth-Port to proxy to, or Auth-Status: <message>
// to refuse (with Auth-Wait: N nginx lets the client try again after N
// seconds, without it nginx closes the connection; for SMTP,
// Auth-Error-Code sets the reply code).
//
// The hook refuses banned addresses and locked logins itself and passes
// every other request, headers and all, to the configured upstream
// auth_http service, whose answer it returns as it came. nginx has no
// fail-open: while mailban is down, logins through nginx fail.

// nginxSMTPErrorCode is the reply a refused SMTP AUTH gets: RFC 4954's
// temporary authentication failure.
const nginxSMTPErrorCode = "454 4.7.0"

// hopByHop headers belong to one connection and are never passed on.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true,
}

func (s *Server) nginx(w http.ResponseWriter, r *http.Request) outcome {
	cfg := s.cfg.Load()
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "nginx auth_http requests are GET", http.StatusMethodNotAllowed)
		return outError
	}
	if !apiKeyOK(r, cfg.Nginx.APIHeader, cfg.Nginx.APIKey) {
		s.log.Warn("nginx auth_http request without the right API key (auth_http_header)", "remote", r.RemoteAddr)
		http.Error(w, "wrong or missing API key", http.StatusForbidden)
		return outError
	}
	ipText := r.Header.Get("Client-IP")
	addr, err := netip.ParseAddr(ipText)
	if err != nil {
		// nginx always sends Client-IP: this is not nginx.
		w.Header().Set("Auth-Status", "Invalid request")
		http.Error(w, "Client-IP is missing or not an address", http.StatusBadRequest)
		return outError
	}
	addr = addr.Unmap()
	user := nginxUnescape(r.Header.Get("Auth-User"))
	method := strings.ToLower(r.Header.Get("Auth-Method"))
	if method == "none" { // unauthenticated SMTP: Auth-User is empty anyway
		user = ""
	}
	svc, _ := parsers.ParseService(r.Header.Get("Auth-Protocol"))

	if rf := s.check(addr, user); rf.refused {
		h := w.Header()
		h.Set("Auth-Status", rf.public())
		if cfg.Nginx.AuthWait > 0 {
			h.Set("Auth-Wait", strconv.FormatInt(int64((cfg.Nginx.AuthWait+time.Second-1)/time.Second), 10))
		}
		if svc == parsers.ServiceSMTP {
			h.Set("Auth-Error-Code", nginxSMTPErrorCode)
		}
		w.WriteHeader(http.StatusOK)
		return outDeny
	}

	status, ok := s.nginxUpstream(w, r, cfg)
	if !ok {
		return outUpstream
	}
	if cfg.Nginx.Report && s.deps.Reporter != nil && user != "" && status != "" {
		kind := parsers.AuthFailure
		if status == "OK" {
			kind = parsers.AuthSuccess
		}
		if err := s.report("hook-"+protoNginx, s.reportEvent(protoNginx, kind, addr, user, svc, 1)); err != nil {
			s.log.Warn("nginx result not counted", "error", err)
		}
	}
	if status != "OK" {
		return outUpstream
	}
	return outAllow
}

// nginxUnescape undoes nginx's escaping of Auth-User (ngx_escape_uri's
// mail_auth set: a space is sent as %20, a % as %25, control characters as
// %XX), so that a login is checked and counted as the client typed it, as
// nginx's own log, the backends' logs and the other protocols name it.
// Something nginx would not send is kept as it came.
func nginxUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// nginxUpstream passes the request to the upstream and its answer back.
// It returns the upstream's Auth-Status, and false when the upstream
// could not be asked (nginx is then told to let the client retry).
func (s *Server) nginxUpstream(w http.ResponseWriter, r *http.Request, cfg *Config) (string, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Nginx.UpstreamTimeout)
	defer cancel()
	up, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Nginx.Upstream, nil)
	if err != nil {
		return s.nginxUnavailable(w, err)
	}
	for k, vs := range r.Header {
		if hopByHop[k] || strings.EqualFold(k, cfg.Nginx.APIHeader) {
			continue
		}
		up.Header[k] = vs
	}
	resp, err := s.upstream.Do(up)
	if err != nil {
		return s.nginxUnavailable(w, err)
	}
	defer resp.Body.Close()
	// nginx reads headers only; the body is drained (bounded) so that the
	// upstream connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, int64(cfg.Limits.MaxRequest)))
	h := w.Header()
	for k, vs := range resp.Header {
		if !hopByHop[k] {
			h[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		return "", true
	}
	return resp.Header.Get("Auth-Status"), true
}

func (s *Server) nginxUnavailable(w http.ResponseWriter, err error) (string, bool) {
	s.log.Warn("nginx auth_http upstream failed", "error", err)
	h := w.Header()
	h.Set("Auth-Status", "Temporary server problem, try again later")
	h.Set("Auth-Wait", "3")
	h.Set("Auth-Error-Code", nginxSMTPErrorCode)
	w.WriteHeader(http.StatusOK)
	return "", false
}
