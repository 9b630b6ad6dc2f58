package parsers

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fail2ban's sample logs, copied unchanged with their attribution.
const fail2banDir = logsDir + "/fail2ban"

// f2bCase is one `# failJSON:` expectation of a fail2ban sample log.
type f2bCase struct {
	line  int      // 1-based number of the log line
	text  string   // the log line
	modes []string // the filter modes in force ("" is the default mode)
	match bool
	host  string
	time  string // local time in CET/CEST; "" when not checked
}

// readFail2ban reads a sample log as fail2ban's samplestestcase.py does: a
// directive applies to the line right after it; filterOptions sets the modes
// of the following lines.
func readFail2ban(t *testing.T, name string) []f2bCase {
	t.Helper()
	f, err := os.Open(filepath.Join(fail2banDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	directive := regexp.MustCompile(`^#+ ?(failJSON|fileOptions|filterOptions|addFILE):(.+)$`)
	var cases []f2bCase
	modes := []string{""}
	var pending *f2bCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if pending != nil {
			pending.line, pending.text = n, line
			cases = append(cases, *pending)
			pending = nil
			continue
		}
		m := directive.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch m[1] {
		case "filterOptions":
			modes = filterModes(t, n, m[2])
		case "failJSON":
			var j struct {
				Match bool   `json:"match"`
				Host  string `json:"host"`
				Time  string `json:"time"`
			}
			if err := json.Unmarshal([]byte(m[2]), &j); err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			pending = &f2bCase{modes: modes, match: j.Match, host: j.Host, time: j.Time}
		default:
			t.Fatalf("%s:%d: directive %s is not handled by this test", name, n, m[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// filterModes reads `{"mode": "auth"}` or a list of such into mode names.
func filterModes(t *testing.T, n int, text string) []string {
	text = strings.TrimSpace(text)
	var list []map[string]string
	if strings.HasPrefix(text, "{") {
		text = "[" + text + "]"
	}
	if err := json.Unmarshal([]byte(text), &list); err != nil {
		t.Fatalf("line %d: filterOptions: %v", n, err)
	}
	var modes []string
	for _, o := range list {
		modes = append(modes, o["mode"])
	}
	return modes
}

// derivedUsers reads the <F-USER> captures of one sample file, by line.
func derivedUsers(t *testing.T, file string) map[int]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fail2banDir, "_derived-captures.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[int]string{}
	for _, row := range strings.Split(string(data), "\n")[1:] {
		cols := strings.Split(row, "\t")
		if len(cols) < 8 || cols[0] != file || cols[6] == "" {
			continue
		}
		n, err := strconv.Atoi(cols[1])
		if err != nil {
			t.Fatalf("_derived-captures.tsv: %q: %v", row, err)
		}
		users[n] = cols[6]
	}
	return users
}

// f2bFile says how mailban's preset of a sample file's name should read it.
type f2bFile struct {
	// min is how many lines at least must agree with fail2ban, so that the
	// test cannot pass by skipping.
	min int
	// kind is the kind mailban gives a line fail2ban matches: AuthFailure
	// unless it returns another.
	kind func(c f2bCase) Kind
	// differ returns why mailban deliberately disagrees with fail2ban about a
	// line (then mailban's answer is the opposite of fail2ban's), or "". It
	// is asked about every line; fail2ban's answer is c.match.
	differ func(c f2bCase) string
}

// TestFail2banSamples checks every preset against fail2ban's annotated
// sample log of the same name: whether a line is a failure (or abuse), the
// address, the user fail2ban captured (_derived-captures.tsv) and the time.
// Every line where mailban deliberately disagrees is listed below with its
// reason; there mailban must give the answer opposite to fail2ban's.
func TestFail2banSamples(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin") // fail2ban's test zone, CET-01CEST-02
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1124013600, 0) // fail2ban's TEST_NOW: year inference is relative to it

	files := fail2banFiles()
	entries, err := os.ReadDir(fail2banDir)
	if err != nil {
		t.Fatal(err)
	}
	walked := 0
	for _, e := range entries {
		name := e.Name()
		if strings.Contains(name, ".") || e.IsDir() {
			continue // README.md, COPIED.md, _derived-captures.tsv
		}
		walked++
		spec, ok := files[name]
		if !ok {
			t.Errorf("%s: no expectations for this sample file in fail2banFiles", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			p := presetParser(t, berlin, name)
			users := derivedUsers(t, name)
			compared, deliberate := 0, map[string]int{}
			for _, c := range readFail2ban(t, name) {
				why := ""
				if spec.differ != nil {
					why = spec.differ(c)
				}
				want := c.match
				if why != "" {
					want = !c.match
					deliberate[why]++
				} else {
					compared++
				}
				x := p.Explain(c.text, now)
				got, ev := f2bVerdict(x)
				if got != want {
					t.Errorf("%s:%d: match %v, want %v (fail2ban: %v; %s)\n\t%s\n\t%s", name, c.line, got, want, c.match, orAgree(why), c.text, explainText(x))
					continue
				}
				if !got {
					continue
				}
				wantKind := AuthFailure
				if spec.kind != nil {
					wantKind = spec.kind(c)
				}
				if ev.Kind != wantKind {
					t.Errorf("%s:%d: kind %v, want %v\n\t%s", name, c.line, ev.Kind, wantKind, c.text)
				}
				if host, err := netip.ParseAddr(c.host); c.match && (err != nil || ev.Addr != host.Unmap()) {
					t.Errorf("%s:%d: address %v, fail2ban says %q\n\t%s", name, c.line, ev.Addr, c.host, c.text)
				}
				if u, ok := users[c.line]; ok && ev.Login != NormalizeLogin(u) {
					t.Errorf("%s:%d: login %q, fail2ban captured %q", name, c.line, ev.Login, u)
				}
				if c.time != "" && ev.Time.IsZero() {
					t.Errorf("%s:%d: no time for a fully counted summary", name, c.line)
				} else if c.time != "" {
					wantTime, err := time.ParseInLocation("2006-1-2T15:04:05", c.time, berlin)
					if err != nil {
						t.Fatalf("%s:%d: %v", name, c.line, err)
					}
					// fail2ban's times have whole seconds.
					diff := wantTime.Sub(ev.Time.Truncate(time.Second))
					if strings.HasPrefix(c.text, "@") {
						// fail2ban reads a TAI64N label as 2^62 + Unix seconds;
						// daemontools writes 2^62 + 10 + Unix seconds (libtai's tai_unix).
						diff = wantTime.Add(-10 * time.Second).Sub(ev.Time.Truncate(time.Second))
					}
					if diff != 0 {
						t.Errorf("%s:%d: time %v, fail2ban says %v\n\t%s", name, c.line, ev.Time, wantTime, c.text)
					}
				}
			}
			if compared < spec.min {
				t.Errorf("only %d lines compared with fail2ban, want at least %d", compared, spec.min)
			}
			t.Logf("%d lines agree with fail2ban", compared)
			for why, n := range deliberate {
				t.Logf("%d lines differ on purpose: %s", n, why)
			}
		})
	}
	if walked != 25 {
		t.Errorf("walked %d sample files, want fail2ban's 25 mail filters", walked)
	}
}

// f2bVerdict is whether mailban counts a line as fail2ban would (a failure
// or abuse), and the event. A session summary whose attempts other lines
// had all counted matched too: its event is rebuilt from the captures.
func f2bVerdict(x Explanation) (bool, Event) {
	if x.OK {
		return x.Event.Kind == AuthFailure || x.Event.Kind == Abuse, x.Event
	}
	for _, m := range x.Matches {
		if strings.HasPrefix(m.Result, "counted already") {
			ev := Event{Kind: AuthFailure}
			for _, c := range m.Captures {
				switch c.Name {
				case "ip":
					ev.Addr, _ = netip.ParseAddr(c.Value)
					ev.Addr = ev.Addr.Unmap()
				case "login":
					ev.Login = NormalizeLogin(c.Value)
				}
			}
			return true, ev
		}
	}
	return false, Event{}
}

// explainText writes an Explanation on one line, for test failures.
func explainText(x Explanation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "program %q, offered to %v", x.Program, x.Offered)
	for _, m := range x.Matches {
		fmt.Fprintf(&b, "; %s/%s %v: %s", m.Format, m.Pattern, m.Captures, m.Result)
	}
	return b.String()
}

func orAgree(why string) string {
	if why == "" {
		return "mailban should agree"
	}
	return "mailban differs on purpose: " + why
}

// has reports whether s contains any of subs.
func has(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// abuseUnless gives the kind of a line: AuthFailure when it contains one of
// auth, else Abuse.
func abuseUnless(auth ...string) func(f2bCase) Kind {
	return func(c f2bCase) Kind {
		if has(c.text, auth...) {
			return AuthFailure
		}
		return Abuse
	}
}

// Reasons mailban differs from fail2ban on purpose, shared by several files.
const (
	notPassword = "the server could not check the password (its auth service was unreachable, the mechanism is unknown, " +
		"the client sent garbage): counting it would ban real users when the auth service is down"
	unspecified  = "0.0.0.0 is no client's address (fail2ban's sample was anonymised): the pattern matches, the event is refused"
	noMail       = "a connection that sent no mail (or did not finish) is what sender-verification callouts, monitoring and impatient clients do too: not abuse"
	dnsOnly      = "a client whose name does not resolve is misconfigured, not abusive; mailban reports refusals, not warnings"
	tlsHandshake = "a failed TLS handshake is not proof of abuse (old clients and scanners alike); no password was tried"
)

// fail2banFiles holds the expectations for each of fail2ban's 25 sample
// files, and every deliberate difference with its reason.
func fail2banFiles() map[string]f2bFile {
	// Dovecot auth-process lines (auth_verbose).
	authProcess := regexp.MustCompile(`(?:^|[ :])(?:dovecot-)?auth(?:-worker)?(?:\([^)]*\))?(?:<[^>]*>)?: |pam_unix\(dovecot:auth\)`)
	return map[string]f2bFile{
		"assp": {min: 4, kind: abuseUnless("535 "), differ: func(c f2bCase) string {
			switch {
			case has(c.text, "SSL negotiation with client failed"):
				return tlsHandshake
			case has(c.text, "Connection lost to authentication server", "Invalid authentication mechanism", "Invalid base64 data"):
				return notPassword
			case has(c.text, " 0.0.0.0 "):
				return unspecified
			}
			return ""
		}},
		"courier-auth": {min: 6},
		"courier-smtp": {min: 8, kind: abuseUnless("535 Authentication failed")},
		"cyrus-imap":   {min: 10},
		"domino-smtp":  {min: 8, kind: abuseUnless("uthentication fail")},
		"dovecot": {min: 40, differ: func(c f2bCase) string {
			switch {
			case !c.match:
			case !slices.Contains(c.modes, ""):
				return "aggressive mode counts connections that never tried a password (no auth attempts, TLS handshake failures)"
			case has(c.text, "(given password: "):
				return "the auth-process line ends with the password the client sent: attacker text on both sides of the address; " +
					"the login-process line of the session counts the attempt"
			case !has(c.text, "-login: ") && authProcess.MatchString(c.text) && !has(c.text, ",<", ")<"):
				return "auth-process line without a session id: the attempt came from a SASL client (Postfix, Exim) whose own line counts it"
			}
			return ""
		}},
		"exim": {min: 35, kind: abuseUnless("authenticator failed"), differ: func(c f2bCase) string {
			switch {
			case !c.match:
			case has(c.text, "no MAIL in SMTP connection"):
				return noMail
			case has(c.text, "no host name found", "no IP address found"):
				return dnsOnly
			}
			return ""
		}},
		"exim-spam":   {min: 8, kind: func(f2bCase) Kind { return Abuse }},
		"groupoffice": {min: 2},
		"horde":       {min: 2},
		"kerio":       {min: 15, kind: abuseUnless("Failed SMTP login")},
		"openwebmail": {min: 3},
		"oracleims":   {min: 4},
		"perdition": {min: 1, differ: func(c f2bCase) string {
			if has(c.text, "Fatal Error reading authentication information") {
				return "the client left before its credentials were read: no password was checked (like Dovecot's \"client didn't finish SASL auth\")"
			}
			return ""
		}},
		"postfix": {min: 45, kind: abuseUnless(" SASL "), differ: func(c f2bCase) string {
			switch {
			case slices.Equal(c.modes, []string{"errors"}) && has(c.text, "improper command pipelining"):
				return "fail2ban's errors mode reads only \"too many errors\"; mailban has no modes and reports improper pipelining as abuse"
			case !c.match:
			case has(c.text, "Invalid authentication mechanism"):
				return notPassword
			case has(c.text, "does not resolve to address"):
				return dnsOnly
			case has(c.text, "disconnect from ") && has(c.text, " auth=0/"):
				return "the disconnect summary repeats the SASL failure lines of the connection: counting it counts them twice"
			case has(c.text, "lost connection after ", "HANGUP after "):
				return noMail
			}
			return ""
		}},
		"qmail": {min: 4, kind: func(f2bCase) Kind { return Abuse }},
		"roundcube-auth": {min: 14, differ: func(c f2bCase) string {
			if has(c.text, "NO Login failed. user=") {
				return "the IMAP reply repeats the login after the address, so attacker text stands on both sides of it: " +
					"no event (the userlogins line counts the attempt)"
			}
			return ""
		}},
		"sendmail-auth": {min: 13},
		"sendmail-reject": {min: 25, kind: func(f2bCase) Kind { return Abuse }, differ: func(c f2bCase) string {
			switch {
			case !c.match:
			case has(c.text, ": from=<"):
				return "fail2ban joins a \"No such user here\" line to the later from= line of the same queue id; " +
					"mailban reads lines one at a time, and a from= line alone is an ordinary message"
			case has(c.text, "did not issue MAIL/EXPN/VRFY/ETRN", "lost input channel"):
				return noMail
			}
			return ""
		}},
		"sieve": {min: 3},
		"sogo-auth": {min: 14, differ: func(c f2bCase) string {
			if has(c.text, "Login from '") && has(c.text, ", ") && strings.Index(c.text, ", ") < strings.Index(c.text, "' for user") {
				return "an X-Forwarded-For list: its first entry is whatever the client sent, so it could name anyone"
			}
			return ""
		}},
		"solid-pop3d":  {min: 8},
		"squirrelmail": {min: 1},
		"tine20":       {min: 2},
		"uwimap-auth":  {min: 6},
	}
}
