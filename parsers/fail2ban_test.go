package parsers

import (
	"bufio"
	"encoding/json"
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

// TestFail2banSamples checks the presets against fail2ban's annotated sample
// logs: every line relevant to password guessing must agree on whether it is
// a failure and on the address. Where mailban deliberately disagrees, the
// reason is given below and the test checks that mailban does what it says.
func TestFail2banSamples(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin") // fail2ban's test zone, CET-01CEST-02
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1124013600, 0) // fail2ban's TEST_NOW: year inference is relative to it
	// Dovecot auth-process lines (auth_verbose), which the dovecot preset
	// deliberately does not count.
	authProcess := regexp.MustCompile(`(?:^|[ :])(?:dovecot-)?auth(?:-worker)?(?:\([^)]*\))?(?:<[^>]*>)?: |pam_unix\(dovecot:auth\)`)

	tests := []struct {
		file   string
		format string
		want   func(c f2bCase) (match bool, why string)
		min    int // cases that must be compared with fail2ban, so that the test cannot pass by skipping
	}{
		{
			file: "postfix", format: "postfix", min: 15,
			want: func(c f2bCase) (bool, string) {
				switch {
				case slices.Contains(c.modes, "auth"):
					return c.match, ""
				case strings.Contains(c.text, " SASL ") && slices.Contains(c.modes, "aggressive"):
					// Aggressive mode includes auth mode's expressions, and adds this one:
					if strings.Contains(c.text, "Invalid authentication mechanism") {
						return false, "the client named a mechanism the server does not offer: no credentials were checked (fail2ban's auth mode agrees, one line earlier)"
					}
					return c.match, ""
				}
				return false, "not a password failure: RCPT rejects, RBL hits, pipelining and lost connections are other modes of fail2ban's filter, for other formats"
			},
		},
		{
			file: "dovecot", format: "dovecot", min: 30,
			want: func(c f2bCase) (bool, string) {
				switch {
				case !slices.Contains(c.modes, ""):
					return false, "aggressive mode counts connections that never tried a password (no auth attempts, TLS handshake failures)"
				case !strings.Contains(c.text, "-login: ") && authProcess.MatchString(c.text):
					return false, "auth-process line: its attempt is also in a login-process line or in the SASL client's own line; counting both counts it twice"
				}
				return c.match, ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := presetParser(t, berlin, tt.format)
			users := derivedUsers(t, tt.file)
			compared, deliberate := 0, map[string]int{}
			for _, c := range readFail2ban(t, tt.file) {
				want, why := tt.want(c)
				if want != c.match {
					deliberate[why]++
				} else {
					compared++
				}
				ev, got := p.Parse(c.text, now)
				if got != want {
					t.Errorf("%s:%d: event %v, want %v (fail2ban: %v; %s)\n\t%s", tt.file, c.line, got, want, c.match, orAgree(why), c.text)
					continue
				}
				if !got {
					continue
				}
				if ev.Kind != AuthFailure {
					t.Errorf("%s:%d: kind %v, want auth_failure", tt.file, c.line, ev.Kind)
				}
				if host, err := netip.ParseAddr(c.host); err != nil || ev.Addr != host.Unmap() {
					t.Errorf("%s:%d: address %v, fail2ban says %q\n\t%s", tt.file, c.line, ev.Addr, c.host, c.text)
				}
				if u, ok := users[c.line]; ok && ev.Login != NormalizeLogin(u) {
					t.Errorf("%s:%d: login %q, fail2ban captured %q", tt.file, c.line, ev.Login, u)
				}
				if c.time != "" {
					wantTime, err := time.ParseInLocation("2006-1-2T15:04:05", c.time, berlin)
					if err != nil {
						t.Fatalf("%s:%d: %v", tt.file, c.line, err)
					}
					// fail2ban's times have whole seconds.
					diff := wantTime.Sub(ev.Time.Truncate(time.Second))
					if strings.HasPrefix(c.text, "@") {
						// fail2ban reads a TAI64N label as 2^62 + Unix seconds;
						// daemontools writes 2^62 + 10 + Unix seconds (libtai's tai_unix).
						diff = wantTime.Add(-10 * time.Second).Sub(ev.Time.Truncate(time.Second))
					}
					if diff != 0 {
						t.Errorf("%s:%d: time %v, fail2ban says %v", tt.file, c.line, ev.Time, wantTime)
					}
				}
			}
			if compared < tt.min {
				t.Errorf("only %d lines compared with fail2ban, want at least %d", compared, tt.min)
			}
			t.Logf("%d lines agree with fail2ban", compared)
			for why, n := range deliberate {
				t.Logf("%d lines differ on purpose: %s", n, why)
			}
		})
	}
}

func orAgree(why string) string {
	if why == "" {
		return "mailban should agree"
	}
	return "mailban differs on purpose: " + why
}
