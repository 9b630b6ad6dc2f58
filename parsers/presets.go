package parsers

import (
	"embed"
	"fmt"
	"io/fs"
)

// presetFiles holds the formats mailban ships, one YAML file each; it is
// read-only.
//
//go:embed presets/*.yaml
var presetFiles embed.FS

// Presets returns the embedded formats, keyed by name. Each call decodes them
// afresh, so callers may change what they get.
func Presets() (map[string]FormatSpec, error) {
	files, err := fs.Glob(presetFiles, "presets/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("list presets: %w", err)
	}
	out := make(map[string]FormatSpec, len(files))
	for _, name := range files {
		data, err := presetFiles.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read preset: %w", err)
		}
		specs, err := ParseFormats(data, name)
		if err != nil {
			return nil, fmt.Errorf("load preset: %w", err)
		}
		for _, s := range specs {
			if _, dup := out[s.Name]; dup {
				return nil, fmt.Errorf("load preset: %s: format %q is defined twice", name, s.Name)
			}
			out[s.Name] = s
		}
	}
	return out, nil
}
