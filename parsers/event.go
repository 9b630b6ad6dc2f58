package parsers

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says what an Event reports.
type Kind uint8

const (
	// KindUnknown is the zero Kind; no parsed Event carries it.
	KindUnknown Kind = iota
	// AuthFailure is a failed authentication: a wrong password, an unknown user.
	AuthFailure
	// AuthSuccess is a successful login.
	AuthSuccess
	// Abuse is a client the server refused for what it did or is, other than
	// a wrong password: relaying, unknown recipients, spam, a block list,
	// protocol violations, the server's own ban. Rules count it only where
	// they are told to; it is never counted as a password failure.
	Abuse
)

var kindNames = [...]string{KindUnknown: "unknown", AuthFailure: "auth_failure", AuthSuccess: "auth_success", Abuse: "abuse"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String for the kinds an Event can carry.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if k != int(KindUnknown) && name == s {
			return Kind(k), nil
		}
	}
	return KindUnknown, fmt.Errorf("unknown event kind %q (want auth_failure, auth_success or abuse)", s)
}

// MarshalText writes the kind's name, as JSON output and YAML formats spell it.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Service is the protocol an attempt was made on, shared by every format so
// that counts and reports group the same way whatever server logged them.
type Service string

// The services mailban knows. Submission (587, 465) is SMTP: it is the same
// credential and the same attack.
const (
	ServiceUnknown     Service = ""
	ServiceSMTP        Service = "smtp"
	ServiceIMAP        Service = "imap"
	ServicePOP3        Service = "pop3"
	ServiceManageSieve Service = "managesieve"
	ServiceJMAP        Service = "jmap"
	ServiceHTTP        Service = "http"
)

// ParseService maps the many spellings servers log (imap-login, pop3s,
// submission, sieve, https, and daemon names such as imapd, ipop3d,
// timsieved or courieresmtpd, …) onto a Service. The second result is false
// when the word names no service mailban knows.
func ParseService(s string) (Service, bool) {
	w := strings.ToLower(strings.TrimSpace(s))
	w = strings.TrimSuffix(w, "-login")
	w = strings.TrimSuffix(w, "-ssl")
	switch w {
	case "smtp", "smtps", "submission", "submissions", "esmtp", "smtpd", "lmtp", "courieresmtpd", "sm-mta", "sendmail":
		return ServiceSMTP, true
	case "imap", "imaps", "imaptls", "imap4", "imap4s", "imapd", "courierimaplogin":
		return ServiceIMAP, true
	case "pop3", "pop3s", "pop", "pops", "pop3d", "ipop3d", "courierpop3login", "solid-pop3d":
		return ServicePOP3, true
	case "managesieve", "sieve", "timsieved":
		return ServiceManageSieve, true
	case "jmap":
		return ServiceJMAP, true
	case "http", "https", "web", "webmail":
		return ServiceHTTP, true
	}
	return ServiceUnknown, false
}

// Event is one authentication outcome read from a log.
type Event struct {
	Time     time.Time  // the line's own time, or its arrival time when it has none
	Kind     Kind       // AuthFailure or AuthSuccess
	Service  Service    // ServiceUnknown when neither the line nor the format says
	Addr     netip.Addr // the client, unmapped (an IPv4-mapped IPv6 address becomes IPv4), no zone
	Login    string     // normalised with NormalizeLogin; empty when the line names none; may share Evidence's memory
	Attempts int        // failed attempts this line reports (Dovecot: "auth failed, 3 attempts"); ≥ 1
	Format   string     // the name of the format that matched
	Evidence string     // the line as read; owned by the Event, not a view of a reused buffer
}

// MaxLoginLen bounds a normalised login in bytes. Logins are attacker
// controlled; a real address is at most 254 bytes long.
const MaxLoginLen = 256

// NormalizeLogin gives the key under which a login is counted: surrounding
// space removed, lower-cased (Dovecot's default auth_username_format %Lu does
// the same, so alice and Alice are one account), invalid UTF-8 replaced, and
// cut to MaxLoginLen bytes on a character boundary. The result never aliases s.
func NormalizeLogin(s string) string {
	return strings.Clone(normalizeLogin(s))
}

// normalizeLogin is NormalizeLogin without the copy: it returns s, or a part
// of it, when nothing needs changing.
func normalizeLogin(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ToLower(s)
	if len(s) > MaxLoginLen {
		cut := MaxLoginLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
