package journaldtest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bootScript runs a program as if the machine had booted with another boot
// id and its journal were the test's: in a mount namespace of its own
// (unshare --mount, whose mounts propagate nowhere) it bind-mounts a file
// over the kernel's boot id, which journald and journalctl read, and puts
// the test's socket and journal directories where every journal program
// looks for them. Arguments: the boot id file, the test's directory, the
// program and its arguments.
const bootScript = `set -e
mount --bind "$1" /proc/sys/kernel/random/boot_id
mount -t tmpfs -o mode=0755 mailban-test-run /run
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d /run/log/journal
mount --bind "$2/sockets" /run/systemd/journal
mount --bind "$2/journal" /run/log/journal
cp "$2/journald.conf" /run/systemd/journald.conf.d/zz-mailban-test.conf
if [ -d /var/log/journal ]; then mount -t tmpfs mailban-test-journal /var/log/journal; fi
shift 2
exec "$@"
`

// Boots is a journal of the test's own that lives through reboots: a
// systemd-journald writing into a temporary directory, started under one
// boot id and then again under another, as after a reboot. Programs run
// through it (Cat, Journalctl) see the boot id of its current boot and its
// journal as the system journal; nothing outside the test sees either.
type Boots struct {
	dir    string // sockets/, journal/, journald.conf, boot-N, run-in-boot
	boots  int
	stopFn func() // stops the running journald; nil when none runs
	pid    int
}

// NewBoots prepares a journal that no journald writes to yet: Boot starts
// one. It needs root (mounts), unshare and mount (util-linux), journald,
// journalctl and systemd-cat; without them the test is skipped, or fails
// when CI=true.
func NewBoots(t testing.TB) *Boots {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "a journal across boots needs root (bind mounts in a mount namespace)")
	}
	for _, tool := range []string{"unshare", "mount", "journalctl", "systemd-cat"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s not found (Debian: apt-get install util-linux mount systemd)", tool)
		}
	}
	if _, err := os.Stat(Binary); err != nil {
		unavailable(t, "%s is missing: %v", Binary, err)
	}
	b := &Boots{dir: t.TempDir()}
	for _, d := range []string{"sockets", "journal"} {
		if err := os.Mkdir(filepath.Join(b.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// No rate limit: a test writes many entries at once.
	conf := "[Journal]\nStorage=volatile\nRateLimitBurst=0\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\nForwardToKMsg=no\n"
	if err := os.WriteFile(filepath.Join(b.dir, "journald.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.script(), []byte(bootScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// A journalctl as the current boot runs it: a wrapper, since a
	// journal source runs one program.
	wrapper := "#!/bin/sh\nexec " + b.Command("journalctl") + " \"$@\"\n"
	if err := os.WriteFile(b.Journalctl(), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	return b
}

func (b *Boots) script() string { return filepath.Join(b.dir, "run-in-boot") }

// bootIDFile is the file holding the current boot's id, which programs
// started from now on see as the kernel's.
func (b *Boots) bootIDFile() string { return filepath.Join(b.dir, "boot_id") }

// Command is the shell command that runs program (and the arguments that
// follow) in the current boot, as Journalctl runs journalctl.
func (b *Boots) Command(program string) string {
	return fmt.Sprintf("unshare --mount sh %s %s %s %s", b.script(), b.bootIDFile(), b.dir, program)
}

// Journalctl is the path of a journalctl that runs in the current boot and
// reads this journal as the system journal.
func (b *Boots) Journalctl() string { return filepath.Join(b.dir, "journalctl") }

// JournalDir is where the journal's files are (in a directory named by the
// machine id, as in /run/log/journal).
func (b *Boots) JournalDir() string { return filepath.Join(b.dir, "journal") }

// Boot stops the running journald, if any, and starts one under a new
// boot id, as a reboot would; it returns the new boot id (as journalctl
// prints _BOOT_ID).
func (b *Boots) Boot(t testing.TB) string {
	t.Helper()
	b.stop()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	id[6] = id[6]&0x0f | 0x40 // a version 4 UUID, as the kernel makes
	id[8] = id[8]&0x3f | 0x80
	h := fmt.Sprintf("%x", id)
	uuid := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	// A new file, not the old one rewritten: programs of the previous boot
	// keep the id they saw (a bind mount holds the file it was made from).
	b.boots++
	next := filepath.Join(b.dir, fmt.Sprintf("boot-%d", b.boots))
	if err := os.WriteFile(next, []byte(uuid+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, b.bootIDFile()); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	cmd := exec.Command("sh", "-c", "exec "+b.Command(Binary))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.pid = cmd.Process.Pid
	b.stopFn = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !b.accepting() {
		select {
		case err := <-exited:
			b.stopFn = nil
			t.Fatalf("%s exited: %v\n%s", Binary, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up in 10s:\n%s", Binary, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("started %s (pid %d) for boot %d, id %s", Binary, b.pid, b.boots, uuid)
	return strings.ReplaceAll(uuid, "-", "")
}

// accepting reports whether the journald of this journal takes entries and
// has its journal file open.
func (b *Boots) accepting() bool {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: filepath.Join(b.dir, "sockets", "socket"), Net: "unixgram"})
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.Write(nil); err != nil {
		return false
	}
	m, _ := filepath.Glob(filepath.Join(b.JournalDir(), "*", "system.journal"))
	return len(m) > 0
}

// stop ends the running journald by its pid, if one runs.
func (b *Boots) stop() {
	if b.stopFn != nil {
		b.stopFn()
		b.stopFn = nil
	}
}

// Cat writes each line as an entry of the program identifier, in the
// current boot (systemd-cat, as a service's standard output).
func (b *Boots) Cat(t testing.TB, identifier string, lines ...string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "exec "+b.Command("systemd-cat")+` -t "$0"`, identifier)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-cat: %v\n%s", err, out)
	}
}

// Entry is an entry of the journal as WaitEntries reads it.
type Entry struct {
	Cursor  string `json:"__CURSOR"`
	Message string `json:"MESSAGE"`
	BootID  string `json:"_BOOT_ID"`
}

// WaitEntries waits until the journal holds n entries matching matches,
// of any boot, and returns them in order.
func (b *Boots) WaitEntries(t testing.TB, n int, matches ...string) []Entry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		args := append([]string{"--directory=" + b.JournalDir(), "--output=json", "--no-pager", "--output-fields=MESSAGE,_BOOT_ID"}, matches...)
		out, err := exec.Command("journalctl", args...).Output()
		if err != nil {
			t.Fatalf("journalctl %v: %v", args, err)
		}
		var entries []Entry
		for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
			var e Entry
			if len(line) > 0 && json.Unmarshal(line, &e) == nil {
				entries = append(entries, e)
			}
		}
		if len(entries) >= n {
			return entries
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal holds %d entries matching %v after 20s, want %d", len(entries), matches, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
