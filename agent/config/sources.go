package config

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailban/mailban/agent/source"
)

// sourceTypes are the source types, in the order error messages list them.
var sourceTypes = []string{"file", "journald", "command", "stdin", "webhook"}

// textSourceKeys apply to every source type whose lines carry their time
// as text (timezone reads times written without a zone).
var textSourceKeys = []string{"name", "type", "formats", "timezone"}

// sourceKeys lists, per source type, the keys that apply to it.
var sourceKeys = map[string][]string{
	"file":    append(slices.Clone(textSourceKeys), "paths", "start-at", "poll", "poll-interval", "follow"),
	"command": append(slices.Clone(textSourceKeys), "command", "stderr", "restart-delay"),
	"stdin":   slices.Clone(textSourceKeys),
	// The journal stamps each entry with its time.
	"journald": {"name", "type", "formats", "matches", "start-at", "journalctl", "journal-directory", "restart-delay"},
	// A webhook's events are structured: no format reads them.
	"webhook": {"name", "type", "listen", "url-path", "signature-key", "signature-key-file", "max-body-bytes"},
}

// Follow is how a file source reads a glob pattern's matches.
type Follow string

// UnmarshalYAML reads each or newest.
func (f *Follow) UnmarshalYAML(n *yaml.Node) error {
	var v string
	err := oneOf(n, &v, "each", "newest")
	*f = Follow(v)
	return err
}

// Stderr is what becomes of a command's standard error.
type Stderr string

// UnmarshalYAML reads log or lines.
func (s *Stderr) UnmarshalYAML(n *yaml.Node) error {
	var v string
	err := oneOf(n, &v, "log", "lines")
	*s = Stderr(v)
	return err
}

// givenKey is a key a source's mapping gives, and its line.
type givenKey struct {
	key  string
	line int
}

// givenSourceKeys lists, per item of the top-level sources list, the keys
// it gives.
func givenSourceKeys(doc *yaml.Node) [][]givenKey {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "sources" || n.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		var out [][]givenKey
		for _, item := range n.Content[i+1].Content {
			var keys []givenKey
			if item.Kind == yaml.MappingNode {
				for j := 0; j+1 < len(item.Content); j += 2 {
					keys = append(keys, givenKey{key: item.Content[j].Value, line: item.Content[j].Line})
				}
			}
			out = append(out, keys)
		}
		return out
	}
	return nil
}

// keysApply reports the given keys that do not apply to a source of typ.
func keysApply(key, typ string, given []givenKey) Errors {
	var errs Errors
	known := map[string]bool{}
	for _, ks := range sourceKeys {
		for _, k := range ks {
			known[k] = true
		}
	}
	for _, g := range given {
		if !known[g.key] || slices.Contains(sourceKeys[typ], g.key) {
			continue // an unknown key is the decoder's to report
		}
		var takers []string
		for _, t := range sourceTypes {
			if slices.Contains(sourceKeys[t], g.key) {
				takers = append(takers, t)
			}
		}
		errs = append(errs, &Error{Line: g.line, Key: key + "." + g.key,
			Msg: fmt.Sprintf("does not apply to a %s source (it is for %s sources; a %s source takes %s)",
				typ, strings.Join(takers, " and "), typ, strings.Join(sourceKeys[typ], ", "))})
	}
	return errs
}

// checkSource checks the settings of sources[i] (s) that its type reads,
// and fills their defaults.
func (c *Config) checkSource(key string, s *SourceConfig, i int) Errors {
	var errs Errors
	bad := func(k, format string, args ...any) {
		errs = append(errs, &Error{Key: key + k, Msg: fmt.Sprintf(format, args...)})
	}
	switch s.Type {
	case "file":
		if len(s.Paths) == 0 {
			bad(".paths", "a file source needs at least one path or glob pattern")
		}
		for j, p := range s.Paths {
			if _, err := filepath.Match(p, ""); err != nil {
				bad(fmt.Sprintf(".paths[%d]", j), "bad glob pattern %q: %v", p, err)
			}
		}
		if s.Follow == "" {
			s.Follow = "each"
		}
	case "journald":
		for j, m := range s.Matches {
			if _, err := source.ParseJournalMatches([]string{m}); err != nil {
				bad(fmt.Sprintf(".matches[%d]", j), "%v", err)
			}
		}
	case "command":
		if len(s.Command) == 0 || s.Command[0] == "" {
			bad(".command", `a command source needs a program and its arguments, e.g. [docker, logs, --follow, mailserver]`)
		}
		if s.Stderr == "" {
			s.Stderr = "log"
		}
	case "stdin":
		for j := range i {
			if c.Sources[j].Type == "stdin" {
				bad(".type", "standard input is read by sources[%d] already", j)
			}
		}
	case "webhook":
		errs = append(errs, c.checkWebhook(key, s, i)...)
	}
	return errs
}

func (c *Config) checkWebhook(key string, s *SourceConfig, i int) Errors {
	var errs Errors
	bad := func(k, format string, args ...any) {
		errs = append(errs, &Error{Key: key + k, Msg: fmt.Sprintf(format, args...)})
	}
	if s.Listen == "" {
		s.Listen = source.DefaultWebhookListen
	}
	if s.URLPath == "" {
		s.URLPath = source.DefaultWebhookPath
	}
	host, _, err := net.SplitHostPort(s.Listen)
	if err != nil {
		bad(".listen", "%q is not host:port (e.g. 127.0.0.1:9848): %v", s.Listen, err)
	}
	for j := range i {
		if o := c.Sources[j]; o.Type == "webhook" && o.Listen == s.Listen {
			bad(".listen", "%s is where sources[%d] listens already", s.Listen, j)
		}
	}
	if !strings.HasPrefix(s.URLPath, "/") {
		bad(".url-path", "%q does not start with /", s.URLPath)
	}
	if s.MaxBodyBytes < 0 {
		bad(".max-body-bytes", "cannot be negative (0 means the default, %d)", source.DefaultMaxBodyBytes)
	}
	switch {
	case s.SignatureKey != "" && s.SignatureKeyFile != "":
		bad(".signature-key-file", "give the key or a file holding it, not both")
	case s.SignatureKey != "":
		s.key = []byte(s.SignatureKey)
	case s.SignatureKeyFile != "":
		data, err := os.ReadFile(s.SignatureKeyFile)
		if err != nil {
			bad(".signature-key-file", "read the key: %v", err)
			break
		}
		if s.key = bytes.TrimRight(data, "\r\n"); len(s.key) == 0 {
			bad(".signature-key-file", "%s is empty", s.SignatureKeyFile)
		}
	}
	if err == nil && s.key == nil && !loopbackHost(host) {
		bad(".listen", "%s is reachable from other hosts: anyone who reaches it could get addresses banned; set signature-key (Stalwart's webhook signature-key) or listen on loopback", s.Listen)
	}
	return errs
}

// loopbackHost reports whether a listen host is loopback only.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// JournalSource gives the journald source its settings.
func (s *SourceConfig) JournalSource() source.JournalConfig {
	return source.JournalConfig{
		Name:         s.Name,
		Matches:      slices.Clone(s.Matches),
		Journalctl:   s.Journalctl,
		Directory:    s.JournalDirectory,
		StartAtEnd:   s.StartAt != "beginning",
		RestartDelay: time.Duration(s.RestartDelay),
	}
}

// CommandSource gives the command source its settings.
func (s *SourceConfig) CommandSource() source.CommandConfig {
	return source.CommandConfig{
		Name:         s.Name,
		Argv:         slices.Clone(s.Command),
		StderrLines:  s.Stderr == "lines",
		RestartDelay: time.Duration(s.RestartDelay),
	}
}

// StdinSource gives the stdin source its settings.
func (s *SourceConfig) StdinSource() source.StdinConfig {
	return source.StdinConfig{Name: s.Name}
}

// WebhookSource gives the webhook source its settings.
func (s *SourceConfig) WebhookSource() source.WebhookConfig {
	return source.WebhookConfig{
		Name:         s.Name,
		Listen:       s.Listen,
		Path:         s.URLPath,
		Key:          slices.Clone(s.key),
		MaxBodyBytes: s.MaxBodyBytes,
	}
}
