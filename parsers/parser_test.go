package parsers

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	_ "time/tzdata" // Europe/Berlin without depending on the host's zoneinfo
)

// The caller may reuse a line's memory as soon as Parse returns.
func TestParseDoesNotRetainLine(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	lines := []string{
		"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice@example.test",
		"Nov 25 19:45:24 mail dovecot: imap-login: Disconnected (auth failed, 2 attempts in 2 secs): user=<bob@example.test>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1",
	}
	for _, line := range lines {
		buf := []byte(line)
		view := unsafe.String(&buf[0], len(buf)) // what a source reusing its buffer hands over
		ev, ok := p.Parse(view, goldenArrival)
		if !ok {
			t.Fatalf("no event for %q", line)
		}
		login := strings.Clone(ev.Login)
		for i := range buf {
			buf[i] = 'X'
		}
		if ev.Evidence != line {
			t.Errorf("Evidence changed with the buffer: %q", ev.Evidence)
		}
		if ev.Login != login || ev.Login == "" {
			t.Errorf("Login changed with the buffer: %q, was %q", ev.Login, login)
		}
		if ev.Format != "postfix" && ev.Format != "dovecot" {
			t.Errorf("Format changed with the buffer: %q", ev.Format)
		}
	}
}

// Most lines of a mail log are not authentication: rejecting them must cost
// no allocation (and so no regex, which allocates its match).
func TestNonMatchingLinesDoNotAllocate(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	lines := []string{
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/qmgr[812]: 0A1B2C3D4E: removed",
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/smtpd[1000]: connect from mail.example.net[203.0.113.7]",
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/smtpd[1000]: disconnect from unknown[203.0.113.7] ehlo=1 auth=0/2 quit=1 commands=2/4",
		"2026-11-25T19:45:22.123456+00:00 mx1 postfix/lmtp[1001]: 0A1B2C3D4E: to=<a@example.com>, relay=mx1[private/dovecot-lmtp], status=sent",
		"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: imap(alice@example.com)<77><abc>: Disconnected: Logged out in=1 out=2",
		"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: auth: passwd-file(admin,203.0.113.7): Password mismatch",
		"Nov 25 19:45:24 mail dovecot: imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=127.0.0.51, lip=127.0.0.1",
		"Nov 25 19:45:24 mail CRON[2345]: (root) CMD (run-parts /etc/cron.hourly)",
		"Jan 29 09:38:46 pop3-login: Info: Disconnected (no auth attempts in 10 secs): user=<>, rip=176.61.137.100",
		"2026-11-25 20:34:44 1xWJnd-0000Ta-1l <= alice@example.test H=(alice-laptop) [203.0.113.2] P=esmtpa",
		"",
		"garbage",
		"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[127.0.0.40]: SASL PLAIN authentication aborted",
	}
	for _, line := range lines {
		if _, ok := p.Parse(line, goldenArrival); ok {
			t.Errorf("event from %q", line)
		}
		if n := testing.AllocsPerRun(50, func() { p.Parse(line, goldenArrival) }); n != 0 {
			t.Errorf("%v allocations rejecting %q", n, line)
		}
	}
}

func TestParseMessage(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		program, message string
		want             Event
		ok               bool
	}{
		{
			program: "dovecot",
			message: "imap-login: Disconnected (auth failed, 3 attempts in 4 secs): user=<Alice>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.1, TLS, session=<abc>",
			want: Event{Time: at, Kind: AuthFailure, Service: ServiceIMAP, Addr: netip.MustParseAddr("203.0.113.7"), Login: "alice", Attempts: 3, Format: "dovecot",
				Evidence: "dovecot: imap-login: Disconnected (auth failed, 3 attempts in 4 secs): user=<Alice>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.1, TLS, session=<abc>"},
			ok: true,
		},
		{
			program: "postfix/submission/smtpd",
			message: "warning: unknown[2001:db8::1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			want: Event{Time: at, Kind: AuthFailure, Service: ServiceSMTP, Addr: netip.MustParseAddr("2001:db8::1"), Attempts: 1, Format: "postfix",
				Evidence: "postfix/submission/smtpd: warning: unknown[2001:db8::1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"},
			ok: true,
		},
		{
			// The journal's program says who wrote it: not Postfix.
			program: "logger",
			message: "warning: unknown[198.51.100.1]: SASL LOGIN authentication failed: x",
		},
		{
			// Without a program only plain formats read it: Dovecot's own log.
			program: "",
			message: "imap-login: Info: Login: user=<bob>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1",
			want: Event{Time: at, Kind: AuthSuccess, Service: ServiceIMAP, Addr: netip.MustParseAddr("203.0.113.9"), Login: "bob", Attempts: 1, Format: "dovecot",
				Evidence: "imap-login: Info: Login: user=<bob>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1"},
			ok: true,
		},
	}
	for _, tt := range tests {
		ev, ok := p.ParseMessage(at, tt.program, tt.message)
		if ok != tt.ok || ev != tt.want {
			t.Errorf("ParseMessage(%q, %q)\n = %+v, %v\nwant %+v, %v", tt.program, tt.message, ev, ok, tt.want, tt.ok)
		}
	}
}

func TestStats(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	lines := []string{
		"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=a",                     // event
		"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: Connection lost to authentication server, sasl_username=a", // ignored
		"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[1.2.3]: SASL LOGIN authentication failed: x",                                                               // unusable address
		"Nov 25 19:45:24 mail postfix/smtpd[1]: connect from unknown[203.0.113.7]",                                                                                          // offered, no match
		"Nov 25 19:45:24 mail postfix/qmgr[1]: ABC: removed",                                                                                                                // not offered
		"Nov 25 19:45:24 mail dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=203.0.113.7, lip=192.0.2.1",                                                           // event
		"Jan 29 09:38:46 pop3-login: Info: Disconnected (no auth attempts in 10 secs): user=<>, rip=176.61.137.100",                                                         // plain, offered to dovecot
	}
	for _, l := range lines {
		p.Parse(l, goldenArrival)
	}
	// The patterns named here; the others must have neither matches nor events.
	want := []FormatStats{
		{Name: "postfix", Lines: 4, Matched: 3, Events: 1, Ignored: 1, Unusable: 1, Patterns: []PatternStats{
			{Name: "sasl-auth-failed", Kind: AuthFailure, Matches: 3, Events: 1}, {Name: "sasl-login", Kind: AuthSuccess}}},
		{Name: "dovecot", Lines: 2, Matched: 1, Events: 1, Patterns: []PatternStats{
			{Name: "login-auth-failed", Kind: AuthFailure}, {Name: "login-plaintext-disallowed", Kind: AuthFailure},
			{Name: "login", Kind: AuthSuccess, Matches: 1, Events: 1}}},
	}
	got := p.Stats()
	if len(got) != len(want) {
		t.Fatalf("Stats = %+v", got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Lines != w.Lines || g.Matched != w.Matched || g.Events != w.Events ||
			g.Ignored != w.Ignored || g.Unusable != w.Unusable || len(g.Patterns) < len(w.Patterns) {
			t.Errorf("Stats[%d] = %+v\nwant       %+v", i, g, w)
			continue
		}
		for j, gp := range g.Patterns {
			wp := PatternStats{Name: gp.Name, Kind: gp.Kind}
			if j < len(w.Patterns) {
				wp = w.Patterns[j]
			}
			if gp != wp {
				t.Errorf("Stats[%d].Patterns[%d] = %+v, want %+v", i, j, gp, wp)
			}
		}
	}
	if names := strings.Join(p.Formats(), ","); names != "postfix,dovecot" {
		t.Errorf("Formats = %s", names)
	}
}

func TestLocation(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	p := presetParser(t, berlin, "postfix")
	arrival := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	fail := " mx1 postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: x"
	tests := []struct {
		stamp string
		want  time.Time
	}{
		{"Jun 30 14:00:00", time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)},      // CEST, UTC+2
		{"Jan 15 14:00:00", time.Date(2026, 1, 15, 13, 0, 0, 0, time.UTC)},      // CET, UTC+1
		{"2026-06-30 14:00:00", time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)},  // no offset: local
		{"2026-06-30T14:00:00Z", time.Date(2026, 6, 30, 14, 0, 0, 0, time.UTC)}, // an offset wins
		{"2026-06-30T14:00:00+05:30", time.Date(2026, 6, 30, 8, 30, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		ev, ok := p.Parse(tt.stamp+fail, arrival)
		if !ok {
			t.Fatalf("no event for %q", tt.stamp)
		}
		if !ev.Time.Equal(tt.want) || ev.Time.Location() != berlin {
			t.Errorf("%s: Time = %v, want %v in Europe/Berlin", tt.stamp, ev.Time, tt.want)
		}
	}

	// An unreadable time is the arrival time, unchanged.
	ev, ok := p.Parse("Nov 31 10:00:00"+fail, arrival)
	if !ok || ev.Time != arrival {
		t.Errorf("unreadable time: %v, %v; want arrival %v", ev.Time, ok, arrival)
	}

	local, err := Compile([]FormatSpec{mustPreset(t, "postfix")}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ = local.Parse("Jun 30 14:00:00"+fail, arrival)
	if ev.Time.Location() != time.Local {
		t.Errorf("nil Location: time in %v, want Local", ev.Time.Location())
	}
}

func mustPreset(t *testing.T, name string) FormatSpec {
	t.Helper()
	presets, err := Presets()
	if err != nil {
		t.Fatal(err)
	}
	return presets[name]
}

// Formats naming a program exactly come before formats matching it by a
// wildcard, whatever their order in the list; otherwise the list's order holds.
func TestFormatOrder(t *testing.T) {
	mine, err := ParseFormats([]byte(`
name: mine
programs: [postfix/smtpd]
service: imap
patterns:
  - name: any-failure
    kind: auth_failure
    contains: ["authentication failed"]
    regex: '\[(?P<ip>[0-9.]+)\]'
`), "mine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile([]FormatSpec{mustPreset(t, "postfix"), mine[0]}, Options{Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	line := "Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: x"
	if ev, _ := p.Parse(line, goldenArrival); ev.Format != "mine" {
		t.Errorf("postfix/smtpd: format %q, want the exact one, mine", ev.Format)
	}
	line = strings.Replace(line, "postfix/smtpd", "postfix/submission/smtpd", 1)
	if ev, _ := p.Parse(line, goldenArrival); ev.Format != "postfix" {
		t.Errorf("postfix/submission/smtpd: format %q, want postfix", ev.Format)
	}
}

// A plain format reads lines without a syslog header; a syslog line of a
// program nobody claims is not offered to it.
func TestPlainFormat(t *testing.T) {
	specs, err := ParseFormats([]byte(`
name: exim-like
header: plain
service: smtp
patterns:
  - name: authenticator-failed
    kind: auth_failure
    contains: ["authenticator failed"]
    regex: '^(?:\[\d+\] )?\S+ authenticator failed for .*?\[(?P<ip>[0-9A-Fa-f.:]+)\](?::\d+)?(?: I=\S+)?: 535 .*?(?: \(set_id=(?P<login>.*)\))?$'
`), "exim.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(specs, Options{Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line  string
		ip    string
		login string
	}{
		{"2026-11-25 20:34:44 dovecot_plain authenticator failed for (localhost) [203.0.113.6]: 535 Incorrect authentication data (set_id=support@example.test)", "203.0.113.6", "support@example.test"},
		{"2026-11-25 20:42:53 [2372] dovecot_login authenticator failed for (localhost) [2001:db8::9]:54313 I=[2001:db8::10]:25: 535 Incorrect authentication data (set_id=bob@example.test)", "2001:db8::9", "bob@example.test"},
		{"Nov 25 20:42:53 mx1 logger[1]: dovecot_plain authenticator failed for (localhost) [203.0.113.6]: 535 Incorrect authentication data", "", ""},
	}
	for _, tt := range tests {
		ev, ok := p.Parse(tt.line, goldenArrival)
		if ok != (tt.ip != "") || (ok && (ev.Addr.String() != tt.ip || ev.Login != tt.login)) {
			t.Errorf("%q: %+v, %v; want ip %q login %q", tt.line, ev, ok, tt.ip, tt.login)
		}
	}
}

// attempts is clamped to [1, MaxAttempts].
func TestAttempts(t *testing.T) {
	specs, err := ParseFormats([]byte(`
name: n
programs: [n]
patterns:
  - name: p
    kind: auth_failure
    contains: [tries]
    regex: '^(?P<attempts>\S+) tries from (?P<ip>\S+)$'
`), "n.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(specs, Options{Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]int{"3": 3, "1": 1, "0": 1, "-4": 1, "x": 1, "99999999999999999999": 1, "5000": MaxAttempts} {
		ev, ok := p.Parse("Nov 25 19:45:24 h n: "+in+" tries from 192.0.2.1", goldenArrival)
		if !ok || ev.Attempts != want {
			t.Errorf("attempts %q: %d (%v), want %d", in, ev.Attempts, ok, want)
		}
	}
}

// A Parser is shared by the goroutines of a source; run with -race.
func TestParseConcurrent(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	line := "Nov 25 19:45:24 mail dovecot: imap-login: Disconnected (auth failed, 2 attempts in 2 secs): user=<bob>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1"
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if ev, ok := p.Parse(line, goldenArrival); !ok || ev.Attempts != 2 {
					t.Errorf("Parse = %+v, %v", ev, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := p.Stats(); st[1].Events != 800 {
		t.Errorf("dovecot events = %d, want 800", st[1].Events)
	}
}

func TestSplitLine(t *testing.T) {
	tests := []struct {
		line                string
		stamp, program, msg string
		syslog, hostless    bool
	}{
		{"Nov 25 19:45:24 mail postfix/smtpd[19823]: warning: x", "Nov 25 19:45:24", "postfix/smtpd", "warning: x", true, false},
		{"Nov  5 19:45:24 mail dovecot: imap-login: x", "Nov  5 19:45:24", "dovecot", "imap-login: x", true, false},
		{"2026-11-25T19:45:22.123456+00:00 mx1 dovecot[790]: a", "2026-11-25T19:45:22.123456+00:00", "dovecot", "a", true, false},
		{"Nov 25 19:45:24 imap-login: Info: x", "Nov 25 19:45:24", "imap-login", "Info: x", true, true},
		{"Nov 25 19:45:24 dovecot[1]: x", "Nov 25 19:45:24", "dovecot", "x", true, true},
		{"host prog[1]: x", "", "prog", "x", true, false},
		{"host prog[1]:", "", "prog", "", true, false},
		{"2026-11-25 20:34:44 dovecot_plain authenticator failed for (x) [1.2.3.4]: 535", "2026-11-25 20:34:44", "", "", false, false},
		{"Nov 25 19:45:24 mx1 prog[1]x: y", "Nov 25 19:45:24", "", "", false, false},
		{"Nov 25 19:45:24 mx1 a:b c", "Nov 25 19:45:24", "", "", false, false},
		{"Nov 25 19:45:24", "Nov 25 19:45:24", "", "", false, false},
		{"Nov 25 19:45:24x mx1 p: y", "", "", "", false, false},
		{"@400000004c91b044077a9e94 imap-login: Info: x", "@400000004c91b044077a9e94", "imap-login", "Info: x", true, true},
		{"Jun 17 14:37:39 <mail.info> robin sm-mta[2794]: x", "Jun 17 14:37:39", "sm-mta", "x", true, false},
		{"Jun 17 14:37:39 <mail.info> sm-mta[2794]: x", "Jun 17 14:37:39", "sm-mta", "x", true, true},
		{"Jun 17 14:37:39 <co ts=\"x\"/>", "Jun 17 14:37:39", "", "", false, false},
		{"<mail.info> robin sm-mta[2794]: x", "", "", "", false, false},
		{"", "", "", "", false, false},
	}
	for _, tt := range tests {
		h := splitLine(tt.line)
		if h.stamp != tt.stamp || h.syslog != tt.syslog || (tt.syslog && (h.program != tt.program || h.message != tt.msg || h.hostless != tt.hostless)) {
			t.Errorf("splitLine(%q) = %+v", tt.line, h)
		}
	}
}

// A `time` capture gives the event's time: in a header's shape, or in one of
// the format's layouts; else the line's header, else arrival.
func TestTimeCapture(t *testing.T) {
	specs, err := ParseFormats([]byte(`
name: app
header: [syslog, plain]
programs: [app]
time-layouts: ["02/Jan/2006 15:04:05", "02-Jan-2006 15:04:05 -0700"]
patterns:
  - name: failed
    kind: auth_failure
    contains: ["failed from"]
    regex: '^(?:\[(?P<time>[^\]]*)\] )?failed from (?P<ip>\S+)$'
`), "app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(specs, Options{Location: berlin})
	if err != nil {
		t.Fatal(err)
	}
	arrival := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		line string
		want time.Time
	}{
		{"[17/Jun/2026 17:00:45] failed from 192.0.2.1", time.Date(2026, 6, 17, 15, 0, 45, 0, time.UTC)},
		{"[22-Jan-2013 22:28:21 +0200] failed from 192.0.2.1", time.Date(2013, 1, 22, 20, 28, 21, 0, time.UTC)},
		{"[2026-06-17T17:00:45Z] failed from 192.0.2.1", time.Date(2026, 6, 17, 17, 0, 45, 0, time.UTC)},
		{"[Jun 17 17:00:45] failed from 192.0.2.1", time.Date(2026, 6, 17, 15, 0, 45, 0, time.UTC)},
		// The capture wins over the header; an unreadable capture leaves the header's time.
		{"Jun 18 10:00:00 h app: [17/Jun/2026 17:00:45] failed from 192.0.2.1", time.Date(2026, 6, 17, 15, 0, 45, 0, time.UTC)},
		{"Jun 18 10:00:00 h app: [yesterday] failed from 192.0.2.1", time.Date(2026, 6, 18, 8, 0, 0, 0, time.UTC)},
		{"[yesterday] failed from 192.0.2.1", arrival},
	}
	for _, tt := range tests {
		ev, ok := p.Parse(tt.line, arrival)
		if !ok || !ev.Time.Equal(tt.want) {
			t.Errorf("%q: time %v (%v), want %v", tt.line, ev.Time, ok, tt.want)
		}
	}
}

// A pattern of kind ignore ends its format's search: later patterns do not
// see the line. Abuse events carry their kind.
func TestIgnoreAndAbuse(t *testing.T) {
	specs, err := ParseFormats([]byte(`
name: app
programs: [app]
patterns:
  - name: probe
    kind: ignore
    contains: ["probe"]
    regex: '^probe from \S+$'
  - name: any
    kind: auth_failure
    contains: ["from"]
    regex: '^\S+ from (?P<ip>\S+)$'
  - name: relay
    kind: abuse
    contains: ["relay"]
    regex: '^relay denied to (?P<ip>\S+)$'
`), "app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(specs, Options{Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Parse("Nov 25 10:00:00 h app: probe from 192.0.2.1", goldenArrival); ok {
		t.Error("an ignored line gave an event")
	}
	if ev, ok := p.Parse("Nov 25 10:00:00 h app: failed from 192.0.2.1", goldenArrival); !ok || ev.Kind != AuthFailure {
		t.Errorf("failure: %+v, %v", ev, ok)
	}
	if ev, ok := p.Parse("Nov 25 10:00:00 h app: relay denied to 192.0.2.2", goldenArrival); !ok || ev.Kind != Abuse {
		t.Errorf("abuse: %+v, %v", ev, ok)
	}
	st := p.Stats()[0]
	if st.Ignored != 1 || st.Events != 2 || !st.Patterns[0].Ignore || st.Patterns[0].Matches != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

// Explain tells which pattern of which format matched, what it captured and
// what came of it, and counts the line as Parse would.
func TestExplain(t *testing.T) {
	p := presetParser(t, time.UTC, presetNames...)
	tests := []struct {
		line    string
		ok      bool
		matches []string // format/pattern: result
	}{
		{
			"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: x, sasl_username=bob",
			true, []string{"postfix/sasl-auth-failed: event"},
		},
		{
			"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: Connection lost to authentication server",
			false, []string{`postfix/sasl-auth-failed: not counted: ignore-if "Connection lost to authentication server"`},
		},
		{
			"Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[999.1.1.1]: SASL LOGIN authentication failed: x",
			false, []string{`postfix/sasl-auth-failed: no event: ip "999.1.1.1" is not an address`},
		},
		{
			"Nov 25 20:00:01 mail dovecot: auth: passwd-file(x,203.0.113.8,<S1>): unknown user",
			true, []string{`dovecot/auth-attempt: event: attempt of session "S1"`},
		},
		{
			"Nov 25 20:00:02 mail dovecot: imap-login: Disconnected (auth failed, 3 attempts in 2 secs): user=<x>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, session=<S1>",
			true, []string{"dovecot/login-auth-failed: event: 2 of 3 attempts, its session's attempt lines counted the other 1"},
		},
		{
			"2026-05-01T10:00:05Z DEBUG Authentication failed (auth.failed) listenerId = \"https\", localPort = 443, remoteIp = 198.51.100.9, remotePort = 55112, details = \"Missing Authorization header.\"",
			false, []string{"stalwart/http-probe: not counted: the format knows this line and deliberately does not count it"},
		},
		{"Nov 25 19:45:24 mail CRON[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: x", false, nil},
	}
	for _, tt := range tests {
		x := p.Explain(tt.line, goldenArrival)
		var got []string
		for _, m := range x.Matches {
			got = append(got, m.Format+"/"+m.Pattern+": "+m.Result)
		}
		if x.OK != tt.ok || strings.Join(got, "|") != strings.Join(tt.matches, "|") {
			t.Errorf("%s\n got %v %q\nwant %v %q", tt.line, x.OK, got, tt.ok, tt.matches)
		}
	}
	x := p.Explain(tests[0].line, goldenArrival)
	want := []Capture{{"ip", "203.0.113.7"}, {"login", "bob"}}
	if len(x.Matches) != 1 || !slices.Equal(x.Matches[0].Captures, want) || x.Program != "postfix/smtpd" || x.Stamp != "Nov 25 19:45:24" {
		t.Errorf("Explain = %+v", x)
	}
}

// An address that is no client's (0.0.0.0, ::) gives no event.
func TestUnspecifiedAddress(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix")
	for _, a := range []string{"0.0.0.0", "::", "::ffff:0.0.0.0"} {
		line := "Nov 25 19:45:24 mail postfix/smtpd[1]: warning: unknown[" + a + "]: SASL LOGIN authentication failed: x"
		if ev, ok := p.Parse(line, goldenArrival); ok {
			t.Errorf("%s: event %+v", a, ev)
		}
	}
}

// Without a service capture or a format service, the daemon's name says it.
func TestServiceFromProgram(t *testing.T) {
	p := presetParser(t, time.UTC, "cyrus-imap", "uwimap-auth", "courier-auth")
	for line, want := range map[string]Service{
		"Jan 4 21:51:05 h cyrus/pop3[1]: badlogin: x [192.0.2.1] plaintext u SASL(-13): authentication failure: checkpass failed": ServicePOP3,
		"Jan 4 21:51:05 h imapd[1]: Login failed user=u auth=u host=x [192.0.2.1]":                                                ServiceIMAP,
		"Jan 4 21:51:05 h ipop3d[1]: Login failed user=u auth=u host=x [192.0.2.1]":                                               ServicePOP3,
		"Jan 4 21:51:05 h pop3d-ssl: LOGIN FAILED, user=u, ip=[::ffff:192.0.2.1]":                                                 ServicePOP3,
	} {
		if ev, ok := p.Parse(line, goldenArrival); !ok || ev.Service != want {
			t.Errorf("%s: service %q (%v), want %q", line, ev.Service, ok, want)
		}
	}
}
