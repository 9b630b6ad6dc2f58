package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a configuration file, located as precisely as
// the file allows.
type Error struct {
	File string // the file as named by the caller
	Line int    // 1-based; 0 when the problem has no single place
	Key  string // the key's path, "sources[0].paths"; "" at the top
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// errAt is what our scalar types' UnmarshalYAML return. It is a
// *yaml.TypeError, the kind yaml.v3 collects and decodes on after, so that
// one pass reports every bad value in a file; locate later finds its key.
func errAt(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

var (
	typeErrLine  = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type`)
	cannotDecode = regexp.MustCompile(`^cannot unmarshal !!(\w+) ` + "`" + `?(.*?)` + "`" + `? into (\S+)$`)
)

// locate turns what yaml.v3 and our UnmarshalYAML methods report into
// Errors with the key path filled in from the document tree.
func locate(file string, doc *yaml.Node, err error) Errors {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var out Errors
		for _, s := range te.Errors {
			m := typeErrLine.FindStringSubmatch(s)
			if m == nil {
				out = append(out, &Error{File: file, Msg: s})
				continue
			}
			line, _ := strconv.Atoi(m[1])
			e := &Error{File: file, Line: line, Msg: m[2]}
			if f := unknownField.FindStringSubmatch(m[2]); f != nil {
				e.Key = pathAtLine(doc, line, f[1])
				e.Msg = "unknown key (check its spelling and indentation)"
				if k, ok := nearest(f[1], keysBeside(e.Key)); ok {
					e.Msg = fmt.Sprintf("unknown key (did you mean %s?)", k)
				}
			} else {
				e.Key = pathAtLine(doc, line, "")
				if c := cannotDecode.FindStringSubmatch(m[2]); c != nil {
					e.Msg = fmt.Sprintf("%s %q is not %s", yamlKindName(c[1]), c[2], goTypeName(c[3]))
				}
			}
			out = append(out, e)
		}
		return out
	}
	// A syntax error: yaml.v3 reports the line where it noticed, which for
	// an unclosed bracket is where the bracket's line began.
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := typeErrLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	return Errors{{File: file, Line: line, Msg: "YAML syntax: " + msg}}
}

func yamlKindName(tag string) string {
	switch tag {
	case "str":
		return "text"
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	case "int", "float":
		return "the number"
	case "bool":
		return "the boolean"
	}
	return tag
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "config."), strings.HasPrefix(t, "parsers."):
		return "a mapping"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "text"
	}
	return t
}

// pathAtLine finds the key path of the deepest node on the given line. With
// a key name, it finds that mapping key on the line (an unknown key), so that
// the path ends in the misspelt key itself.
func pathAtLine(doc *yaml.Node, line int, key string) string {
	best := ""
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := joinKey(path, k.Value)
				if k.Line == line && (key == "" || k.Value == key) {
					best = p
				} else if key == "" && v.Kind == yaml.ScalarNode && v.Line == line {
					best = p
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if key == "" && c.Kind == yaml.ScalarNode && c.Line == line {
					best = p
				}
				walk(c, p)
			}
		case yaml.AliasNode:
			// aliases point at nodes located elsewhere; their lines are not this key's
		}
	}
	if doc != nil {
		walk(doc, "")
	}
	return best
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// lineOfPath finds the line of a key path such as "sources[1].paths", or of
// its nearest existing parent, for errors found after decoding.
func lineOfPath(doc *yaml.Node, path string) int {
	if doc == nil {
		return 0
	}
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range splitPath(path) {
		found := false
		switch {
		case part.index >= 0 && n.Kind == yaml.SequenceNode && part.index < len(n.Content):
			n = n.Content[part.index]
			found = true
		case part.index < 0 && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part.key {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
		}
		if !found {
			return line
		}
		if part.index >= 0 {
			line = n.Line
		}
	}
	return line
}

type pathPart struct {
	key   string
	index int // -1 for a key
}

func splitPath(path string) []pathPart {
	var parts []pathPart
	for _, seg := range strings.Split(path, ".") {
		if seg == "" {
			continue
		}
		key, rest, _ := strings.Cut(seg, "[")
		if key != "" {
			parts = append(parts, pathPart{key: key, index: -1})
		}
		for rest != "" {
			num, after, _ := strings.Cut(rest, "]")
			i, err := strconv.Atoi(num)
			if err != nil {
				break
			}
			parts = append(parts, pathPart{index: i})
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return parts
}

// keysBeside lists the keys a Config allows beside the one at path (e.g.
// "sources[0].formtas": the keys of a source), following the YAML names
// of its fields; nil when the path leads nowhere known.
func keysBeside(path string) []string {
	segs := strings.Split(path, ".")
	t := reflect.TypeOf(Config{})
	for _, seg := range segs[:len(segs)-1] {
		name, _, _ := strings.Cut(seg, "[")
		t = structOf(t)
		if t == nil {
			return nil
		}
		f, ok := fieldByYAML(t, name)
		if !ok {
			return nil
		}
		t = f.Type
	}
	t = structOf(t)
	if t == nil {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// structOf is the struct behind pointers, slices and maps of t, or nil.
func structOf(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

func fieldByYAML(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if n, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); n == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}
