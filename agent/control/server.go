package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/rules"
)

// Backend is what the control socket controls: the agent. Methods that
// change something are executed in order with the agent's own work, so
// that their decisions are enforced and saved before they return.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	List(ctx context.Context, what string, f Filter) ([]Entry, error) // what: "bans" or "locks"
	Ban(ctx context.Context, o Order) (Result, error)
	Unban(ctx context.Context, o Order) (Result, error)
	Block(ctx context.Context, o Order) (Result, error)
	Unblock(ctx context.Context, o Order) (Result, error)
	Unlock(ctx context.Context, o Order) (Result, error)
	Why(ctx context.Context, subject string) (Why, error)
	Reload(ctx context.Context) (Result, error)
	Version() Version
}

// MaxReason bounds a ban's or block's reason, in bytes.
const MaxReason = 500

// maxBody bounds a request body: requests are a few short strings.
const maxBody = 64 << 10

// Server serves a Backend over HTTP.
type Server struct {
	b        Backend
	log      *slog.Logger
	requests *prometheus.CounterVec
	mux      *http.ServeMux
}

// NewServer returns a server for b, counting requests in reg.
func NewServer(b Backend, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	s := &Server{
		b:   b,
		log: logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_control_requests_total",
			Help: "Requests to the control socket, by command and result code (ok, invalid, not_found, refused, failed).",
		}, []string{"command", "code"}),
		mux: http.NewServeMux(),
	}
	if err := reg.Register(s.requests); err != nil {
		return nil, fmt.Errorf("register control metrics: %w", err)
	}
	s.handle("GET /v1/version", "version", func(r *http.Request) (any, error) { return b.Version(), nil })
	s.handle("GET /v1/status", "status", func(r *http.Request) (any, error) { return b.Status(r.Context()) })
	s.handle("GET /v1/bans", "bans", func(r *http.Request) (any, error) { return s.list(r, "bans") })
	s.handle("GET /v1/locks", "locks", func(r *http.Request) (any, error) { return s.list(r, "locks") })
	s.handle("GET /v1/why", "why", func(r *http.Request) (any, error) {
		subject := strings.TrimSpace(r.URL.Query().Get("subject"))
		if subject == "" {
			return nil, Invalidf("name an address, a network or a login")
		}
		return b.Why(r.Context(), subject)
	})
	s.handle("POST /v1/ban", "ban", s.change(b.Ban, networkOrder(true)))
	s.handle("POST /v1/unban", "unban", s.change(b.Unban, networkOrder(false)))
	s.handle("POST /v1/block", "block", s.change(b.Block, networkOrder(false)))
	s.handle("POST /v1/unblock", "unblock", s.change(b.Unblock, networkOrder(false)))
	s.handle("POST /v1/unlock", "unlock", s.change(b.Unlock, loginOrder))
	s.handle("POST /v1/reload", "reload", func(r *http.Request) (any, error) { return b.Reload(r.Context()) })
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, &Error{Code: CodeInvalid, Message: fmt.Sprintf("no command %s %s (this mailban speaks /v1/)", r.Method, r.URL.Path)})
	})
	return s, nil
}

func (s *Server) handle(pattern, command string, fn func(r *http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		out, err := fn(r)
		if err != nil {
			code := CodeOf(err)
			s.requests.WithLabelValues(command, code).Inc()
			if code == CodeFailed {
				s.log.Warn("control command failed", "command", command, "error", err)
			}
			writeJSON(w, statusOf(code), &Error{Code: code, Message: err.Error()})
			return
		}
		s.requests.WithLabelValues(command, "ok").Inc()
		writeJSON(w, http.StatusOK, out)
	})
}

func statusOf(code string) int {
	switch code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeRefused:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) list(r *http.Request, what string) ([]Entry, error) {
	q := r.URL.Query()
	f := Filter{Type: q.Get("type"), Login: q.Get("login"), Reason: q.Get("reason")}
	switch f.Type {
	case "", "ban", "block":
	default:
		return nil, Invalidf("type %q: want ban or block", f.Type)
	}
	if n := q.Get("net"); n != "" {
		p, err := ParseTarget(n)
		if err != nil {
			return nil, Invalidf("%v", err)
		}
		f.Network = p
	}
	if v := q.Get("permanent"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, Invalidf("permanent=%q: want true or false", v)
		}
		f.Permanent = b
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, Invalidf("limit=%q: want a whole number, 0 for all", v)
		}
		f.Limit = n
	}
	entries, err := s.b.List(r.Context(), what, f)
	if entries == nil && err == nil {
		entries = []Entry{} // [] rather than null for scripts
	}
	return entries, err
}

func (s *Server) change(do func(context.Context, Order) (Result, error), parse func(Request) (Order, error)) func(r *http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		var req Request
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, Invalidf("read request: %v", err)
		}
		o, err := parse(req)
		if err != nil {
			return nil, err
		}
		return do(r.Context(), o)
	}
}

// networkOrder checks a request naming an address or network.
func networkOrder(withDuration bool) func(Request) (Order, error) {
	return func(req Request) (Order, error) {
		p, err := ParseTarget(req.Target)
		if err != nil {
			return Order{}, Invalidf("%v", err)
		}
		o := Order{Network: p, Force: req.Force, Inside: req.Inside}
		if o.Reason, err = checkReason(req.Reason); err != nil {
			return Order{}, err
		}
		if req.For != "" {
			if !withDuration {
				return Order{}, Invalidf("only a ban takes a duration")
			}
			if o.For, o.Permanent, err = ParseBanLength(req.For); err != nil {
				return Order{}, Invalidf("%v", err)
			}
		}
		return o, nil
	}
}

func loginOrder(req Request) (Order, error) {
	login := strings.TrimSpace(req.Target)
	if login == "" {
		return Order{}, Invalidf("name a login")
	}
	return Order{Login: login}, nil
}

// ParseTarget reads an address or CIDR network as the configuration does,
// refusing typos: "203.0.113.7", "203.0.113.0/24", "2001:db8::/48".
func ParseTarget(s string) (netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return netip.Prefix{}, errors.New("name an address or a CIDR network, e.g. 203.0.113.7 or 203.0.113.0/24")
	}
	return config.ParseNetwork(s)
}

// ParseBanLength reads a ban's --for: a duration with units s, m, h, d, w,
// or "permanent".
func ParseBanLength(s string) (d time.Duration, permanent bool, err error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "permanent", "forever":
		return 0, true, nil
	}
	d, err = rules.ParseDuration(s)
	if err != nil {
		return 0, false, fmt.Errorf("--for %q is not a duration (use a number and a unit: s, m, h, d, w, e.g. 90m or 2d; or permanent)", s)
	}
	if d <= 0 {
		return 0, false, fmt.Errorf("--for %s: a ban must last more than 0 (or use --for permanent)", s)
	}
	return d, false, nil
}

// checkReason refuses reasons that would garble a log line or a table:
// control characters and very long text.
func checkReason(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxReason {
		return "", Invalidf("the reason is %d bytes; at most %d", len(s), MaxReason)
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return "", Invalidf("the reason contains a control character or invalid UTF-8 (%q); write it on one line", r)
		}
	}
	return s, nil
}

// Serve answers requests on ln until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve control socket: %w", err)
	}
	return nil
}
