package function

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ManifestFile is the optional per-function settings file.
const ManifestFile = "function.yaml"

// manifestAltFile is accepted too (people type .yml); a folder may hold only
// one of the two.
const manifestAltFile = "function.yml"

// manifest is function.yaml as written. Pointers and empty strings mean "not
// set", so defaults can be told from explicit values.
type manifest struct {
	Runtime           string            `yaml:"runtime"`
	Image             string            `yaml:"image"`
	Handler           string            `yaml:"handler"`
	Mode              string            `yaml:"mode"`
	Timeout           string            `yaml:"timeout"`
	Env               map[string]string `yaml:"env"`
	Memory            string            `yaml:"memory"`
	CPUs              *int              `yaml:"cpus"`
	Egress            *bool             `yaml:"egress"`
	MinReplicas       *int              `yaml:"minReplicas"`
	MaxReplicas       *int              `yaml:"maxReplicas"`
	Concurrency       *int              `yaml:"concurrency"`
	IdleTimeout       string            `yaml:"idleTimeout"`
	TargetUtilization *float64          `yaml:"targetUtilization"`
	Secrets           []string          `yaml:"secrets"`
	Template          string            `yaml:"template"`
}

// manifestField is one field of manifest: its name in YAML, its index in
// the struct and what a value must look like (for error messages).
type manifestField struct {
	name  string
	index int
	want  string
	tags  []string // YAML tags a value may resolve to
}

// manifestFields lists manifest's fields in declaration order.
func manifestFields() []manifestField {
	want := map[reflect.Kind]string{
		reflect.String:  "a string",
		reflect.Int:     "a whole number",
		reflect.Bool:    "true or false",
		reflect.Float64: "a number",
		reflect.Map:     `a mapping of NAME: "value"`,
	}
	special := map[string]string{
		"timeout":     `a duration such as "30s"`,
		"idleTimeout": `a duration such as "5m"`,
		"memory":      `a size such as "256MB"`,
		"secrets":     `a list of secret names such as [db-password]`,
	}
	// No conversions: "yes" is not a bool and 1.5 not an int.
	tags := map[reflect.Kind][]string{
		reflect.String:  {"!!str"},
		reflect.Int:     {"!!int"},
		reflect.Bool:    {"!!bool"},
		reflect.Float64: {"!!float", "!!int"},
	}
	t := reflect.TypeFor[manifest]()
	out := make([]manifestField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		k := f.Type.Kind()
		if k == reflect.Pointer {
			k = f.Type.Elem().Kind()
		}
		name := f.Tag.Get("yaml")
		w, ok := special[name]
		if !ok {
			w = want[k]
		}
		out = append(out, manifestField{name: name, index: i, want: w, tags: tags[k]})
	}
	return out
}

// parseManifest decodes function.yaml strictly (YAML 1.2, so yes/no/on/off
// are strings, not booleans): unknown fields (names are case-sensitive),
// fields set twice and values of the wrong type are errors that name the
// field and its line. Empty content is an empty manifest.
func parseManifest(file string, data []byte) (*manifest, error) {
	m := &manifest{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return m, nil // empty, or only comments
	} else if err != nil {
		return nil, invalidf("%s: %s", file, yamlMessage(err))
	}
	// Further documents are refused, except empty ones (a trailing "---").
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || !emptyDocument(&extra) {
			return nil, invalidf("%s: holds more than one YAML document", file)
		}
	}
	if len(doc.Content) == 0 {
		return m, nil // empty, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return m, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, invalidf("%s: must be a mapping of settings (runtime: python3, ...), got %s", file, nodeKind(root))
	}
	fields := manifestFields()
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	rv := reflect.ValueOf(m).Elem()
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if first, dup := seen[key]; dup {
			return nil, invalidf("%s: line %d: %s is set twice (first on line %d)", file, k.Line, key, first)
		}
		seen[key] = k.Line
		f, ok := findField(fields, key)
		if !ok {
			if alt, ok := findFieldFold(fields, key); ok {
				return nil, invalidf("%s: line %d: unknown field %q (did you mean %q? field names are case-sensitive)", file, k.Line, key, alt.name)
			}
			return nil, invalidf("%s: line %d: unknown field %q (known fields: %s)", file, k.Line, key, strings.Join(names, ", "))
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue // "field:" with nothing after it: not set
		}
		if f.name == "secrets" {
			names, err := decodeSecrets(file, v)
			if err != nil {
				return nil, err
			}
			m.Secrets = names
			continue
		}
		if f.name == "env" {
			env, err := decodeEnv(file, v)
			if err != nil {
				return nil, err
			}
			m.Env = env
			continue
		}
		target := reflect.New(rv.Field(f.index).Type())
		if v.Kind != yaml.ScalarNode || !slices.Contains(f.tags, v.Tag) || v.Decode(target.Interface()) != nil {
			return nil, invalidf("%s: line %d: %s: got %s, want %s", file, v.Line, key, nodeKind(v), f.want)
		}
		rv.Field(f.index).Set(target.Elem())
	}
	return m, nil
}

// decodeEnv reads env's NAME: "value" pairs. Values must be strings in the
// YAML sense: 1, true or 1.5 need quotes, so nothing is converted silently.
func decodeEnv(file string, n *yaml.Node) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, invalidf("%s: line %d: env: got %s, want %s", file, n.Line, nodeKind(n), `a mapping of NAME: "value"`)
	}
	env := make(map[string]string, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if _, dup := env[k.Value]; dup {
			return nil, invalidf("%s: line %d: env %s is set twice", file, k.Line, k.Value)
		}
		if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
			return nil, invalidf("%s: line %d: env %s: value must be a string; quote it: %s: %q", file, v.Line, k.Value, k.Value, v.Value)
		}
		env[k.Value] = v.Value
	}
	return env, nil
}

// decodeSecrets reads secrets' list of names. Each follows the function-name
// rules (it names a file the platform provides); none may repeat.
func decodeSecrets(file string, n *yaml.Node) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, invalidf("%s: line %d: secrets: got %s, want %s", file, n.Line, nodeKind(n), "a list of secret names such as [db-password]")
	}
	names := make([]string, 0, len(n.Content))
	for _, v := range n.Content {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
			return nil, invalidf("%s: line %d: secrets: got %s, want a secret name", file, v.Line, nodeKind(v))
		}
		if !namePattern.MatchString(v.Value) {
			return nil, invalidf("%s: line %d: secret name %q: use 1 to 63 characters, lowercase letters a-z, digits 0-9 and '-', starting with a letter or digit", file, v.Line, v.Value)
		}
		if slices.Contains(names, v.Value) {
			return nil, invalidf("%s: line %d: secret %s is listed twice", file, v.Line, v.Value)
		}
		names = append(names, v.Value)
	}
	return names, nil
}

func findField(fields []manifestField, key string) (manifestField, bool) {
	for _, f := range fields {
		if f.name == key {
			return f, true
		}
	}
	return manifestField{}, false
}

func findFieldFold(fields []manifestField, key string) (manifestField, bool) {
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f, true
		}
	}
	return manifestField{}, false
}

// nodeKind describes a YAML value for an error message.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	}
	return fmt.Sprintf("%q", n.Value)
}

// yamlMessage flattens a YAML error to one line, without the converter's
// prefix.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	return strings.Join(strings.Fields(msg), " ")
}

// emptyDocument reports whether a decoded YAML document holds no value.
func emptyDocument(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Value == "")
}
