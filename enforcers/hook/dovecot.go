package hook

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/mailban/mailban/parsers"
)

// Dovecot's auth policy (auth_policy_server_url): Dovecot POSTs a JSON
// object of its auth_policy_request_attributes to the URL with
// ?command=allow before checking a password (and again after, by default),
// and ?command=report with "success" and "policy_reject" added once the
// login has succeeded or failed. It answers {"status":N,"msg":"..."}:
// N < 0 refuses (msg is shown to the client), 0 lets the login go on, and
// N > 0 delays it N seconds first. When the policy server cannot be reached
// or answers nonsense, Dovecot lets the login go on (unless
// auth_policy_reject_on_fail = yes): mailban being down fails open.

// dovecotRequest holds the attributes the hook reads; Dovecot's default
// attributes in 2.3 and 2.4 carry them all. Values are strings, as
// Dovecot's template writes them.
type dovecotRequest struct {
	Login        string `json:"login"`
	Remote       string `json:"remote"`
	PwHash       string `json:"pwhash"`
	Protocol     string `json:"protocol"`
	Success      bool   `json:"success"`
	PolicyReject bool   `json:"policy_reject"`
	FailType     string `json:"fail_type"` // 2.4: internal, credentials, account, expired, disabled, policy
}

type dovecotResponse struct {
	Status int    `json:"status"`
	Msg    string `json:"msg,omitempty"`
}

func (s *Server) dovecot(w http.ResponseWriter, r *http.Request) outcome {
	cfg := s.cfg.Load()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a JSON object", http.StatusMethodNotAllowed)
		return outError
	}
	if !apiKeyOK(r, cfg.Dovecot.APIHeader, cfg.Dovecot.APIKey) {
		s.log.Warn("dovecot policy request without the right API key (auth_policy_server_api_header)", "remote", r.RemoteAddr)
		http.Error(w, "wrong or missing API key", http.StatusForbidden)
		return outError
	}
	var req dovecotRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(cfg.Limits.MaxRequest)))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "body is not a JSON object of auth_policy_request_attributes", http.StatusBadRequest)
		}
		return outError
	}
	addr, _ := netip.ParseAddr(req.Remote) // "" or garbage: the login alone is checked
	addr = addr.Unmap()

	switch cmd := r.URL.Query().Get("command"); cmd {
	case "allow":
		rf := s.check(addr, req.Login)
		switch {
		case !rf.refused:
			writeJSON(w, dovecotResponse{Status: 0})
			return outAllow
		case rf.login && cfg.Dovecot.Tarpit > 0:
			writeJSON(w, dovecotResponse{Status: int((cfg.Dovecot.Tarpit + time.Second - 1) / time.Second)})
			return outDeny
		}
		writeJSON(w, dovecotResponse{Status: -1, Msg: rf.public()})
		return outDeny
	case "report":
		out := s.dovecotReport(cfg, &req, addr)
		writeJSON(w, dovecotResponse{Status: 0})
		return out
	default:
		http.Error(w, "command must be allow or report, not "+strconv.Quote(truncate([]byte(cmd), 32)), http.StatusBadRequest)
		return outError
	}
}

// dovecotReport feeds one reported result to the rules. Internal failures
// (the password database was down) are not the client's; a repeat of the
// same wrong password from the same address for the same login within the
// repeat window counts once.
func (s *Server) dovecotReport(cfg *Config, req *dovecotRequest, addr netip.Addr) outcome {
	if !cfg.Dovecot.Report || s.deps.Reporter == nil {
		return outIgnored
	}
	svc, _ := parsers.ParseService(req.Protocol)
	kind := parsers.AuthFailure
	switch {
	case req.Success:
		kind = parsers.AuthSuccess
	case req.FailType == "internal", req.FailType == "expired", req.FailType == "disabled":
		return outIgnored
	}
	if !addr.IsValid() && req.Login == "" {
		return outIgnored
	}
	if kind == parsers.AuthFailure && req.PwHash != "" {
		window := cfg.Dovecot.RepeatWindow
		if window == 0 {
			window = DefaultRepeatWindow
		}
		key := addr.String() + "\x00" + parsers.NormalizeLogin(req.Login) + "\x00" + req.PwHash
		if !s.repeats.first(key, s.clock.Now(), window) {
			return outRepeat
		}
	}
	if err := s.report("hook-"+protoDovecot, s.reportEvent(protoDovecot, kind, addr, req.Login, svc, 1)); err != nil {
		s.log.Warn("dovecot report not counted", "error", err)
		return outError
	}
	return outReport
}

// apiKeyOK compares the request's key with the configured one in constant
// time.
func apiKeyOK(r *http.Request, header, key string) bool {
	got := r.Header.Get(header)
	return subtle.ConstantTimeCompare([]byte(got), []byte(key)) == 1
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
