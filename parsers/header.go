package parsers

import (
	"strings"
	"time"
)

// stampKind says which timestamp shape a line starts with. The shape is found
// for every line (a cheap scan); the time itself is computed only for lines
// that produce an event.
type stampKind uint8

const (
	stampNone    stampKind = iota
	stampRFC3164           // "Nov 25 19:45:24", "Nov  5 19:45:24", "Mar 7 02:09:33"
	stampISO               // "2026-11-25T19:45:22.123456+00:00", "2026-11-25 20:34:44"
	stampTAI64N            // "@400000004c91b044077a9e94" (daemontools multilog)
)

// head is a line split into its header and its message, all views of the line.
type head struct {
	stamp     string // the timestamp's text, "" when the line has none
	stampKind stampKind
	rest      string // everything after the timestamp: the message of a plain line

	syslog   bool   // rest has a syslog header
	hostless bool   // the syslog header has no host (`<time> prog[pid]: msg`)
	program  string // the program tag without [pid]
	message  string // what follows "program[pid]: "
}

// splitLine finds the timestamp and the syslog header of a line without
// converting anything.
func splitLine(line string) head {
	h := head{rest: line}
	if n, k := stampLen(line); n > 0 {
		h.stamp, h.stampKind = line[:n], k
		if n < len(line) {
			n++ // the space after the timestamp
		}
		h.rest = line[n:]
	}
	rest := h.rest
	if n := priorityLen(rest); n > 0 && h.stamp != "" {
		// BSD syslogd's print_facility: "Jun 17 14:37:39 <mail.info> host prog[1]: ...".
		rest = rest[n:]
	}
	h.program, h.message, h.hostless, h.syslog = splitSyslog(rest)
	return h
}

// priorityLen measures a "<facility.level> " word, as BSD syslogd writes it
// after the time; 0 when s does not start with one.
func priorityLen(s string) int {
	if len(s) < 5 || s[0] != '<' {
		return 0
	}
	dot := false
	for i := 1; i < len(s) && i < 24; i++ {
		switch c := s[i]; {
		case c == '>':
			if !dot || i == 1 || i+1 >= len(s) || s[i+1] != ' ' {
				return 0
			}
			return i + 2
		case c == '.':
			dot = true
		case !isLower(c) && !isDigit(c):
			return 0
		}
	}
	return 0
}

// splitSyslog splits `host program[pid]: message`. A first word that ends in
// ':' is a program tag written without a host (`dovecot[790]: ...`, and the
// `imap-login: Info: ...` of Dovecot's own log file, which plain formats read).
func splitSyslog(s string) (program, message string, hostless, ok bool) {
	sp := strings.IndexByte(s, ' ')
	if sp < 0 {
		sp = len(s)
	}
	if sp == 0 {
		return "", "", false, false
	}
	if s[sp-1] == ':' {
		program, message, ok = splitTag(s)
		return program, message, true, ok
	}
	if sp == len(s) {
		return "", "", false, false
	}
	program, message, ok = splitTag(s[sp+1:])
	return program, message, false, ok
}

// splitTag splits `program[pid]: message` or `program: message`.
func splitTag(s string) (program, message string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ':':
			if i == 0 || (i+1 < len(s) && s[i+1] != ' ') {
				return "", "", false
			}
			return s[:i], s[min(i+2, len(s)):], true
		case '[':
			end := strings.IndexByte(s[i:], ']')
			if i == 0 || end < 0 {
				return "", "", false
			}
			k := i + end + 1
			if k >= len(s) || s[k] != ':' || (k+1 < len(s) && s[k+1] != ' ') {
				return "", "", false
			}
			return s[:i], s[min(k+2, len(s)):], true
		case ' ':
			return "", "", false
		}
	}
	return "", "", false
}

// stampLen returns the length of the timestamp a line starts with, 0 when it
// starts with none. A timestamp must be followed by a space or the line's end.
func stampLen(s string) (int, stampKind) {
	if s == "" {
		return 0, stampNone
	}
	n, k := 0, stampNone
	switch c := s[0]; {
	case c >= 'A' && c <= 'Z':
		n, k = rfc3164Len(s), stampRFC3164
	case isDigit(c):
		n, k = isoLen(s), stampISO
	case c == '@':
		if len(s) >= 25 && allHex(s[1:25]) {
			n, k = 25, stampTAI64N
		}
	}
	if n == 0 || (n < len(s) && s[n] != ' ') {
		return 0, stampNone
	}
	return n, k
}

// rfc3164Len measures "Mmm dd hh:mm:ss", where the day may be "dd", " d" or
// "d", and the seconds may carry a fraction.
func rfc3164Len(s string) int {
	if len(s) < 14 || !isLower(s[1]) || !isLower(s[2]) || s[3] != ' ' {
		return 0
	}
	i := 4
	switch {
	case s[i] == ' ' && isDigit(s[i+1]):
		i += 2
	case isDigit(s[i]) && isDigit(s[i+1]):
		i += 2
	case isDigit(s[i]):
		i++
	default:
		return 0
	}
	if i >= len(s) || s[i] != ' ' {
		return 0
	}
	i++
	if !clockAt(s, i) {
		return 0
	}
	return fractionEnd(s, i+8)
}

// isoLen measures "yyyy-mm-dd[T ]hh:mm:ss[.frac][Z|±hh:mm|±hhmm]".
func isoLen(s string) int {
	if len(s) < 19 || !digits(s[0:4]) || s[4] != '-' || !digits(s[5:7]) || s[7] != '-' || !digits(s[8:10]) ||
		(s[10] != 'T' && s[10] != ' ') || !clockAt(s, 11) {
		return 0
	}
	i := fractionEnd(s, 19)
	if i < len(s) {
		switch s[i] {
		case 'Z':
			i++
		case '+', '-':
			switch {
			case len(s) >= i+6 && digits(s[i+1:i+3]) && s[i+3] == ':' && digits(s[i+4:i+6]):
				i += 6
			case len(s) >= i+5 && digits(s[i+1:i+5]):
				i += 5
			}
		}
	}
	return i
}

// clockAt reports whether s holds "hh:mm:ss" at i.
func clockAt(s string, i int) bool {
	return len(s) >= i+8 && digits(s[i:i+2]) && s[i+2] == ':' && digits(s[i+3:i+5]) && s[i+5] == ':' && digits(s[i+6:i+8])
}

// fractionEnd skips a fraction of a second (".123456" or ",123") at i.
func fractionEnd(s string, i int) int {
	if i+1 < len(s) && (s[i] == '.' || s[i] == ',') && isDigit(s[i+1]) {
		i += 2
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i
}

// stampTime converts a timestamp found by stampLen. Times without an offset
// are in loc; RFC 3164 times, which have no year, get the year that puts them
// at most a day after arrival. The result is in loc.
func stampTime(stamp string, kind stampKind, arrival time.Time, loc *time.Location) (time.Time, bool) {
	switch kind {
	case stampRFC3164:
		return rfc3164Time(stamp, arrival, loc)
	case stampISO:
		return isoTime(stamp, loc)
	case stampTAI64N:
		return tai64nTime(stamp, loc)
	}
	return time.Time{}, false
}

// months holds the English month abbreviations syslog writes, three bytes each.
const months = "JanFebMarAprMayJunJulAugSepOctNovDec"

func rfc3164Time(s string, arrival time.Time, loc *time.Location) (time.Time, bool) {
	m := strings.Index(months, s[:3])
	if m < 0 || m%3 != 0 {
		return time.Time{}, false
	}
	month := time.Month(m/3 + 1)
	i := 4
	if s[i] == ' ' {
		i++
	}
	day := 0
	for ; isDigit(s[i]); i++ {
		day = day*10 + int(s[i]-'0')
	}
	i++ // the space before the clock
	hour, minute, sec, ok := clock(s[i : i+8])
	if !ok || day < 1 || day > 31 {
		return time.Time{}, false
	}
	nsec := fraction(s[i+8:])
	a := arrival.In(loc)
	// The log's year is the arrival's unless that puts the line more than a
	// day in the future; then it is an earlier year. Going back more than one
	// year only happens for 29 February.
	for y := a.Year(); y > a.Year()-9; y-- {
		t := time.Date(y, month, day, hour, minute, sec, nsec, loc)
		if t.Day() != day {
			continue // 29 February of a year that has none (or 31 of a short month)
		}
		if t.Sub(a) > 24*time.Hour {
			continue
		}
		return t, true
	}
	return time.Time{}, false
}

func isoTime(s string, loc *time.Location) (time.Time, bool) {
	year := atoi(s[0:4])
	month, day := atoi(s[5:7]), atoi(s[8:10])
	hour, minute, sec, ok := clock(s[11:19])
	if !ok || month < 1 || month > 12 || day < 1 || day > 31 {
		return time.Time{}, false
	}
	i := fractionEnd(s, 19)
	nsec := fraction(s[19:i])
	zone := s[i:]
	var t time.Time
	switch {
	case zone == "":
		t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	case zone == "Z":
		t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	default:
		hh, mm := atoi(zone[1:3]), atoi(zone[len(zone)-2:])
		if hh > 23 || mm > 59 {
			return time.Time{}, false
		}
		off := time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute
		if zone[0] == '-' {
			off = -off
		}
		t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-off)
	}
	if t.Day() != day {
		return time.Time{}, false // 30 February and the like
	}
	return t.In(loc), true
}

// tai64nTime reads a TAI64N label as daemontools writes it: 2^62 + 10 + Unix
// seconds (libtai's tai_unix; leap seconds since 1972 are not counted), then
// nanoseconds.
func tai64nTime(s string, loc *time.Location) (time.Time, bool) {
	var secs, nsec uint64
	for _, c := range []byte(s[1:17]) {
		secs = secs<<4 | uint64(unhex(c))
	}
	for _, c := range []byte(s[17:25]) {
		nsec = nsec<<4 | uint64(unhex(c))
	}
	const base = 1<<62 + 10
	if secs < base || secs-base > 1<<40 || nsec >= 1e9 {
		return time.Time{}, false
	}
	return time.Unix(int64(secs-base), int64(nsec)).In(loc), true
}

// clock reads "hh:mm:ss" (already checked to be digits and colons).
func clock(s string) (hour, minute, sec int, ok bool) {
	hour, minute, sec = atoi(s[0:2]), atoi(s[3:5]), atoi(s[6:8])
	return hour, minute, sec, hour < 24 && minute < 60 && sec <= 60
}

// fraction reads ".123456" as nanoseconds; anything else is 0.
func fraction(s string) int {
	if len(s) < 2 || (s[0] != '.' && s[0] != ',') {
		return 0
	}
	ns, scale := 0, 100_000_000
	for i := 1; i < len(s) && isDigit(s[i]); i++ {
		ns += int(s[i]-'0') * scale
		scale /= 10
	}
	return ns
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if unhex(s[i]) > 15 {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}
