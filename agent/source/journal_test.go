package source

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailban/mailban/internal/journaldtest"
	"github.com/mailban/mailban/parsers"
)

// journalConfig reads the entries of one program, with quick restarts.
func journalConfig(ident string) JournalConfig {
	return JournalConfig{
		Name:            "journal",
		Matches:         []string{"SYSLOG_IDENTIFIER=" + ident},
		StartAtEnd:      true,
		RestartDelay:    5 * time.Millisecond,
		MaxRestartDelay: 50 * time.Millisecond,
		StopTimeout:     2 * time.Second,
	}
}

func startJournal(t *testing.T, cfg JournalConfig, saved map[string][]byte) (*Journal, *collector) {
	t.Helper()
	j, err := NewJournal(cfg, saved, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return j, collect(t, j)
}

// uniqueIdent is a program name no other test or program logs as.
func uniqueIdent(t *testing.T) string {
	return fmt.Sprintf("mailban-test-%d-%d", os.Getpid(), time.Now().UnixNano())
}

// journalctlOf returns the pid of the journalctl that follows ident's
// entries, once there is one.
func journalctlOf(t *testing.T, ident string) int {
	t.Helper()
	pid := 0
	waitFor(t, "journalctl to run", func() bool {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if len(args) > 0 && filepath.Base(args[0]) == "journalctl" && strings.Contains(string(b), "--follow") &&
				strings.Contains(string(b), "SYSLOG_IDENTIFIER="+ident) {
				pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return true
			}
		}
		return false
	})
	return pid
}

// TestJournal reads a real journal: lines as program, message and time;
// Stalwart's structured entries as events; journalctl killed and started
// again; mailban stopped and started again. Every entry arrives once.
func TestJournal(t *testing.T) {
	journaldtest.Need(t)
	ident := uniqueIdent(t)
	match := "SYSLOG_IDENTIFIER=" + ident

	// There before the first start: start-at end skips them.
	journaldtest.Cat(t, ident, numbered("old", 0, 20)...)
	journaldtest.WaitEntries(t, 20, match)
	j, c := startJournal(t, journalConfig(ident), nil)
	waitFor(t, "running", func() bool { return j.Status()[0].State == stateRunning })
	journalctlOf(t, ident)

	before := time.Now().Add(-time.Second)
	journaldtest.Cat(t, ident, numbered("a", 0, 30)...)
	c.waitLines(30)
	for _, l := range c.snapshot() {
		if l.Program != ident || l.Time.Before(before) || l.Time.After(time.Now()) || l.Cursor.Value == nil || l.Event != nil {
			t.Fatalf("line %+v: want program %s, the entry's time, a cursor, no event", l, ident)
		}
	}

	// Stalwart's journald tracer: fields, not text.
	stalwart := func(message string, fields ...string) {
		journaldtest.Write(t, append([]string{"SYSLOG_IDENTIFIER=" + ident, "MESSAGE=" + message}, fields...)...)
	}
	stalwart("Authentication failed", "REMOTEIP=203.0.113.7", `ACCOUNTNAME=Alice@Example.org", remoteIp = 10.9.9.9`, "LISTENERID=imaptls", "LOCALPORT=993")
	stalwart("Authentication failed", "REMOTEIP=198.51.100.9", "LISTENERID=https", "DETAILS=Missing Authorization header.")
	stalwart("Authentication successful", "REMOTEIP=::ffff:192.0.2.10", "ACCOUNTNAME=bob", "LOCALPORT=587")
	stalwart("Banned due to authentication errors", "REMOTEIP=2001:db8::7", "LISTENERID=submission")
	stalwart("IP block expired", "REMOTEIP=203.0.113.7")
	journaldtest.Write(t, "SYSLOG_IDENTIFIER="+ident, "MESSAGE=bin\x01ary")
	c.waitLines(36)
	got := c.snapshot()[30:]
	want := []struct {
		kind    parsers.Kind
		addr    string
		login   string
		service parsers.Service
	}{
		{parsers.AuthFailure, "203.0.113.7", `alice@example.org", remoteip = 10.9.9.9`, parsers.ServiceIMAP},
		{},
		{parsers.AuthSuccess, "192.0.2.10", "bob", parsers.ServiceSMTP},
		{parsers.AuthFailure, "2001:db8::7", "", parsers.ServiceSMTP},
		{},
		{},
	}
	for i, w := range want {
		l := got[i]
		if w.kind == parsers.KindUnknown {
			if l.Event != nil {
				t.Errorf("entry %d (%q): event %+v, want none", i, l.Text, l.Event)
			}
			continue
		}
		ev := l.Event
		if ev == nil {
			t.Errorf("entry %d (%q): no event", i, l.Text)
			continue
		}
		if ev.Kind != w.kind || ev.Addr != netip.MustParseAddr(w.addr) || ev.Login != w.login || ev.Service != w.service ||
			ev.Attempts != 1 || ev.Format != FormatStalwartJournal || ev.Time != l.Time || ev.Evidence == "" {
			t.Errorf("entry %d: event %+v, want %+v", i, ev, w)
		}
	}
	if got[5].Text != "bin\x01ary" {
		t.Errorf("binary message read as %q", got[5].Text)
	}

	// journalctl dies: it is started again after the last entry read.
	if err := syscall.Kill(journalctlOf(t, ident), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	journaldtest.Cat(t, ident, numbered("b", 0, 20)...)
	c.waitLines(56)
	waitFor(t, "a restart", func() bool { return j.Status()[0].Restarts >= 1 })
	saved := c.stop()

	// mailban stops; entries come meanwhile; it resumes after the last
	// entry it read.
	journaldtest.Cat(t, ident, numbered("c", 0, 20)...)
	journaldtest.WaitEntries(t, 20+30+6+20+20, match)
	_, c2 := startJournal(t, journalConfig(ident), saved)
	c2.waitLines(20)
	journaldtest.Cat(t, ident, "end 0")
	c2.waitText("end 0")
	c2.stop()

	var texts []Line
	for _, l := range append(c.snapshot(), c2.snapshot()...) {
		if l.Event == nil && l.Text != "bin\x01ary" && !strings.HasPrefix(l.Text, "Authentication") && !strings.HasPrefix(l.Text, "IP block") {
			texts = append(texts, l)
		}
	}
	checkExactlyOnce(t, texts, numbered("a", 0, 30), numbered("b", 0, 20), numbered("c", 0, 20), []string{"end 0"})
	if st := j.Status()[0]; st.Lines != 56 {
		t.Errorf("status %+v; want 56 entries read", st)
	}
}

// TestJournalStartAtBeginning reads what the journal already holds.
func TestJournalStartAtBeginning(t *testing.T) {
	journaldtest.Need(t)
	ident := uniqueIdent(t)
	journaldtest.Cat(t, ident, numbered("a", 0, 10)...)
	journaldtest.WaitEntries(t, 10, "SYSLOG_IDENTIFIER="+ident)
	cfg := journalConfig(ident)
	cfg.StartAtEnd = false
	_, c := startJournal(t, cfg, nil)
	c.waitLines(10)
	journaldtest.Cat(t, ident, "end 0")
	c.waitText("end 0")
	c.stop()
	checkExactlyOnce(t, c.snapshot(), numbered("a", 0, 10), []string{"end 0"})
}

// TestJournalUnavailable: no journalctl, no journal files, a cursor
// journalctl refuses: errors in the status, no crash, and a clean stop.
func TestJournalUnavailable(t *testing.T) {
	withJournal := t.TempDir()
	if err := os.WriteFile(filepath.Join(withJournal, "system.journal"), []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		cfg   func(*JournalConfig)
		want  string
		state string
	}{
		{"no journalctl", func(c *JournalConfig) { c.Journalctl = "/nonexistent/journalctl"; c.Directory = withJournal },
			"no such file or directory", stateError},
		{"no journal files", func(c *JournalConfig) { c.Directory = t.TempDir() }, "no journal files found in", stateError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := journalConfig("nobody")
			tc.cfg(&cfg)
			j, c := startJournal(t, cfg, nil)
			waitFor(t, "restarts", func() bool { return j.Status()[0].Restarts >= 3 })
			st := j.Status()[0]
			if !strings.Contains(st.LastError, tc.want) || st.State != tc.state {
				t.Errorf("status %+v; want state %s and an error saying %q", st, tc.state, tc.want)
			}
			c.stop()
		})
	}
}

// TestJournalMatches checks how matches become journalctl's arguments.
func TestJournalMatches(t *testing.T) {
	cases := []struct {
		in   []string
		want string // arguments joined by spaces; "error" for an error
	}{
		{nil, ""},
		{[]string{"_SYSTEMD_UNIT=postfix@-.service", "SYSLOG_IDENTIFIER=dovecot"}, "_SYSTEMD_UNIT=postfix@-.service + SYSLOG_IDENTIFIER=dovecot"},
		{[]string{"_SYSTEMD_UNIT=stalwart.service PRIORITY=6"}, "_SYSTEMD_UNIT=stalwart.service PRIORITY=6"},
		{[]string{"syslog_identifier=x"}, "error"},
		{[]string{"/usr/sbin/postfix"}, "error"},
		{[]string{"  "}, "error"},
		{[]string{"MESSAGE="}, "MESSAGE="},
	}
	for _, tc := range cases {
		args, err := ParseJournalMatches(tc.in)
		got := strings.Join(args, " ")
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("ParseJournalMatches(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestJournalValue reads the shapes journalctl prints field values in.
func TestJournalValue(t *testing.T) {
	cases := map[string]string{
		`"plain"`:                 "plain",
		`"quote \" and \\ tab\t"`: "quote \" and \\ tab\t",
		`"caf\u00e9"`:             "café",
		`[98,1,105,110]`:          "b\x01in",
		`[255,97]`:                "\uFFFDa",
		`["first","second"]`:      "first",
		`[[98,1],"second"]`:       "b\x01",
		`null`:                    "",
		`12`:                      "",
		`[300]`:                   "",
		``:                        "",
	}
	for in, want := range cases {
		if got := journalValue([]byte(in)); got != want {
			t.Errorf("journalValue(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestJournalRefusedCursor: a saved cursor journalctl cannot seek to (a
// state file from another machine) is dropped with a warning, and reading
// starts as start-at says.
func TestJournalRefusedCursor(t *testing.T) {
	journaldtest.Need(t)
	ident := uniqueIdent(t)
	journaldtest.Cat(t, ident, "old 0")
	journaldtest.WaitEntries(t, 1, "SYSLOG_IDENTIFIER="+ident)
	j, c := startJournal(t, journalConfig(ident), map[string][]byte{"": []byte("s=0;i=1")})
	waitFor(t, "a restart", func() bool { return j.Status()[0].Restarts >= 1 && j.Status()[0].State == stateRunning })
	if st := j.Status()[0]; !strings.Contains(st.LastError, "cursor") {
		t.Errorf("status %+v; want journalctl's complaint about the cursor", st)
	}
	journaldtest.Cat(t, ident, "new 0")
	c.waitText("new 0")
	c.stop()
	checkExactlyOnce(t, c.snapshot(), []string{"new 0"})
}

// TestJournalUnreadable: a journal mailban may not read (run as a user
// outside the systemd-journal group) is an error in the status, not
// silence.
func TestJournalUnreadable(t *testing.T) {
	journaldtest.Need(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run journalctl as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	// journalctl as nobody: a wrapper, since the source runs one program.
	wrapper := filepath.Join(t.TempDir(), "journalctl-as-nobody")
	script := "#!/bin/sh\nexec " + setpriv + " --reuid=65534 --regid=65534 --clear-groups journalctl \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := journalConfig(uniqueIdent(t))
	cfg.Journalctl = wrapper
	cfg.StartAtEnd = false
	j, c := startJournal(t, cfg, nil)
	waitFor(t, "an error", func() bool { return strings.Contains(j.Status()[0].LastError, "permission") })
	c.stop()
}

// TestJournalAcrossReboot reads a journal that holds two boots, as a
// journald of the test's own writes it under one boot id and then, as
// after a reboot, under another; the source's journalctl runs in the
// second boot. journalctl --follow alone reads only the current boot: the
// entries logged in the first boot after mailban's last position (its last
// seconds before the shutdown) must arrive all the same, before those of
// the new boot, each once, each with its own cursor.
func TestJournalAcrossReboot(t *testing.T) {
	cases := []struct {
		name       string
		resume     bool // a first run in the first boot read a 0..9 and saved its position
		startAtEnd bool
		newBoot    int // entries of the new boot ("b 0".."b N-1") there before the source starts
		// seam: "seam 0" is logged in the new boot after the source read
		// the journal to its end and before journalctl --follow starts.
		seam bool
		want [][]string
	}{
		{"resume, entries of the new boot waiting", true, true, 5, false,
			[][]string{numbered("late", 0, 5), numbered("b", 0, 10), {"end 0"}}},
		{"resume, nothing of the new boot yet", true, true, 0, true,
			[][]string{numbered("late", 0, 5), {"seam 0"}, numbered("b", 0, 10), {"end 0"}}},
		{"start at the beginning", false, false, 5, false,
			[][]string{numbered("a", 0, 10), numbered("late", 0, 5), numbered("b", 0, 10), {"end 0"}}},
		{"start at the end, nothing of the new boot yet", false, true, 0, true,
			[][]string{{"seam 0"}, numbered("b", 0, 10), {"end 0"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			boots := journaldtest.NewBoots(t)
			ident := uniqueIdent(t)
			match := "SYSLOG_IDENTIFIER=" + ident
			journalctl := boots.Journalctl() // the second run's
			if tc.seam {
				// The first journalctl --follow logs "seam 0" and waits
				// for it to be in the journal before it starts.
				dir := t.TempDir()
				script := fmt.Sprintf(`#!/bin/sh
case " $* " in
*" --follow "*)
	if mkdir %[1]s/seam 2>/dev/null; then
		echo "seam 0" | %[2]s -t %[3]s
		i=0
		until journalctl --directory=%[4]s --output=cat SYSLOG_IDENTIFIER=%[3]s MESSAGE="seam 0" | grep -q seam; do
			i=$((i+1)); [ $i -lt 1000 ] || exit 99; sleep 0.01
		done
	fi;;
esac
exec %[5]s "$@"
`, dir, boots.Command("systemd-cat"), ident, boots.JournalDir(), journalctl)
				journalctl = filepath.Join(dir, "journalctl")
				if err := os.WriteFile(journalctl, []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			start := func(journalctl string, startAtEnd bool, saved map[string][]byte) (*Journal, *collector) {
				cfg := journalConfig(ident)
				cfg.Journalctl = journalctl
				cfg.StartAtEnd = startAtEnd
				j, err := NewJournal(cfg, saved, testLogger(t), nil)
				if err != nil {
					t.Fatal(err)
				}
				j.journalDirs = []string{boots.JournalDir()} // where its journalctl finds the system journal
				return j, collect(t, j)
			}

			first := boots.Boot(t)
			boots.Cat(t, ident, numbered("a", 0, 10)...)
			boots.WaitEntries(t, 10, match)
			var saved map[string][]byte
			if tc.resume {
				_, c := start(boots.Journalctl(), false, nil)
				c.waitLines(10)
				saved = c.stop()
			}
			// Logged after mailban's last position, before the shutdown.
			boots.Cat(t, ident, numbered("late", 0, 5)...)
			boots.WaitEntries(t, 15, match)

			second := boots.Boot(t)
			if tc.newBoot > 0 {
				boots.Cat(t, ident, numbered("b", 0, tc.newBoot)...)
				boots.WaitEntries(t, 15+tc.newBoot, match)
			}
			_, c := start(journalctl, tc.startAtEnd, saved)
			journalctlOf(t, ident) // following now: the rest arrives while it follows
			boots.Cat(t, ident, numbered("b", tc.newBoot, 10)...)
			boots.Cat(t, ident, "end 0")
			c.waitText("end 0")
			got := c.stop()
			lines := c.snapshot()
			checkExactlyOnce(t, lines, tc.want...)

			// The first boot's entries came first, and each line carries
			// its entry's own cursor: the position saved is where the
			// journal says the line is.
			entries := boots.WaitEntries(t, 26+int(boolCount(tc.seam)), match)
			cursorOf := map[string]string{}
			bootOf := map[string]string{}
			for _, e := range entries {
				cursorOf[e.Message], bootOf[e.Message] = e.Cursor, e.BootID
			}
			if bootOf["late 4"] != first || bootOf["b 0"] != second || first == second {
				t.Fatalf("boots of the entries: late 4 in %s, b 0 in %s; want %s, then %s", bootOf["late 4"], bootOf["b 0"], first, second)
			}
			seenSecond := false
			for _, l := range lines {
				if string(l.Cursor.Value) != cursorOf[l.Text] {
					t.Errorf("line %q: cursor %s, want the entry's %s", l.Text, l.Cursor.Value, cursorOf[l.Text])
				}
				if bootOf[l.Text] == second {
					seenSecond = true
				} else if seenSecond {
					t.Errorf("line %q of the first boot arrived after one of the second", l.Text)
				}
			}
			if want := cursorOf["end 0"]; string(got[""]) != want {
				t.Errorf("position after the run %s, want the last entry's %s", got[""], want)
			}
		})
	}
}
