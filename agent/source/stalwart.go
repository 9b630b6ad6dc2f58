package source

import (
	"net/netip"
	"strings"
	"time"

	"github.com/mailban/mailban/parsers"
)

// Stalwart sends structured events (webhooks, journald fields): they become
// Events directly, without a text format, so that no attacker-chosen value
// (an account name with quotes in it) can move another. What counts:
//
//   - auth.failed: a failed login, one attempt; except HTTP probes that
//     sent no credentials ("Missing Authorization header"), which every
//     JMAP client's first request is.
//   - auth.success: a successful login.
//   - security.* (Stalwart banned or refused the address: authentication,
//     abuse, scan and loiter bans, a blocked address connecting, an
//     unauthorized request): one failed attempt each, so that an address
//     Stalwart shuts out is banned by mailban too if it keeps trying; the
//     *-expired events are not counted.
//
// auth.too-many-attempts is not counted: the attempts it sums up come as
// auth.failed events of their own.

// Event formats of Stalwart's structured events, Event.Format.
const (
	FormatStalwartWebhook = "stalwart-webhook"
	FormatStalwartJournal = "stalwart-journal"
)

// missingAuthorization marks HTTP requests without credentials.
const missingAuthorization = "Missing Authorization header"

// stalwartKind says what a Stalwart event type counts as; false for types
// not counted.
func stalwartKind(typ string) (parsers.Kind, bool) {
	switch {
	case typ == "auth.failed":
		return parsers.AuthFailure, true
	case typ == "auth.success":
		return parsers.AuthSuccess, true
	case strings.HasPrefix(typ, "security.") && !strings.HasSuffix(typ, "-expired"):
		return parsers.AuthFailure, true
	}
	return parsers.KindUnknown, false
}

// stalwartTypeOf maps the description Stalwart's journald tracer writes as
// MESSAGE (it sends no event id) to the event type, for the types counted.
func stalwartTypeOf(description string) (string, bool) {
	switch description {
	case "Authentication failed":
		return "auth.failed", true
	case "Authentication successful":
		return "auth.success", true
	case "Banned due to authentication errors":
		return "security.authentication-ban", true
	case "Banned due to abuse":
		return "security.abuse-ban", true
	case "Banned due to scan":
		return "security.scan-ban", true
	case "Banned due to loitering":
		return "security.loiter-ban", true
	case "Blocked IP address":
		return "security.ip-blocked", true
	case "Unauthorized access":
		return "security.unauthorized", true
	}
	return "", false
}

// stalwartFields are the keys of a Stalwart event that mailban reads.
type stalwartFields struct {
	typ       string
	remoteIP  string
	account   string
	listener  string
	localPort string
	details   string
	reason    string
}

// Outcomes of stalwartEvent, besides outcomeCounted.
// outcomeIgnored: not a type counted; outcomeUnusable: no usable address.

// stalwartEvent makes the Event of a Stalwart event.
func stalwartEvent(f stalwartFields, t time.Time, format, evidence string) (parsers.Event, string) {
	kind, ok := stalwartKind(f.typ)
	if !ok {
		return parsers.Event{}, outcomeIgnored
	}
	if f.typ == "auth.failed" && (strings.Contains(f.details, missingAuthorization) || strings.Contains(f.reason, missingAuthorization)) {
		return parsers.Event{}, outcomeIgnored
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(f.remoteIP))
	if err != nil {
		return parsers.Event{}, outcomeUnusable
	}
	ev := parsers.Event{
		Time:     t,
		Kind:     kind,
		Service:  stalwartService(f.listener, f.localPort),
		Addr:     addr.Unmap().WithZone(""),
		Login:    parsers.NormalizeLogin(f.account),
		Attempts: 1,
		Format:   format,
		Evidence: evidence,
	}
	return ev, outcomeCounted
}

// stalwartService reads the service from the listener's id (Stalwart's
// default ids are smtp, submission, submissions, imap, imaptls, pop3, pop3s,
// sieve, https), or else from the local port.
func stalwartService(listener, port string) parsers.Service {
	if s, ok := parsers.ParseService(listener); ok {
		return s
	}
	switch strings.TrimSpace(port) {
	case "25", "465", "587":
		return parsers.ServiceSMTP
	case "143", "993":
		return parsers.ServiceIMAP
	case "110", "995":
		return parsers.ServicePOP3
	case "4190":
		return parsers.ServiceManageSieve
	case "80", "443", "8080":
		return parsers.ServiceHTTP
	}
	return parsers.ServiceUnknown
}

// maxEvidence bounds the evidence kept of a structured event.
const maxEvidence = 1024

func capEvidence(s string) string {
	if len(s) <= maxEvidence {
		return s
	}
	return strings.ToValidUTF8(s[:maxEvidence], "")
}
