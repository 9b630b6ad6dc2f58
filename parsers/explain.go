package parsers

// Explanation is what the formats made of one line (Parser.Explain).
type Explanation struct {
	Stamp   string   // the timestamp the line starts with; "" when none was recognised
	Program string   // the syslog program tag; "" when the line has no syslog header
	Offered []string // the formats the line was offered to, in order (a format may appear twice: as syslog and as plain)
	Matches []Match  // every pattern whose regex matched, in the order tried
	Event   Event    // the event, when OK
	OK      bool
}

// Match is one pattern whose regex matched a line, what it captured, and
// what came of it.
type Match struct {
	Format   string
	Pattern  string
	Kind     string    // the pattern's kind: auth_failure, auth_success, abuse or ignore
	Captures []Capture // named captures that took part in the match, in the regex's order
	Result   string    // "event", or why not: "not counted: ignore-if ...", "no event: ip ... is not an address", ...
}

// Capture is one named capture group's text.
type Capture struct {
	Name  string
	Value string
}

// say records a match's result; m may be nil (Parse, not Explain).
func (m *Match) say(result string) {
	if m != nil {
		m.Result = result
	}
}

func explainMatch(f *format, pat *pattern, msg string, sub []int) Match {
	m := Match{Format: f.name, Pattern: pat.name, Kind: pat.kindName()}
	for n, name := range pat.re.SubexpNames() {
		if name == "" || sub[2*n] < 0 {
			continue
		}
		m.Captures = append(m.Captures, Capture{Name: name, Value: msg[sub[2*n]:sub[2*n+1]]})
	}
	return m
}
