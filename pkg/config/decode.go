package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// decode turns YAML into a Config, refusing duplicate keys, unknown keys and
// values of the wrong type. raw is the generic document, kept so callers can
// tell an explicit zero from an absent key.
func decode(data []byte) (*Config, any, []error) {
	// Strict: duplicate keys are an error, as the YAML spec says.
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, nil, []error{trimYAMLError(err)}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber() // keep integers exact for the shape check
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, []error{err}
	}

	// encoding/json matches keys case-insensitively and stops at the first
	// problem; this walk is exact, names the full key path and finds all.
	var errs []error
	checkShape(reflect.TypeFor[Config](), raw, "", &errs)
	if len(errs) > 0 {
		return nil, nil, errs
	}

	c := new(Config)
	// Only a backstop now: the walk above already refused what this would.
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, nil, []error{err}
	}
	// Unquoted `off` is YAML 1.1 for false; mean what the user wrote.
	if v, ok := lookup(raw, "metrics", "listen"); ok && v == false {
		c.Metrics.Listen = MetricsOff
	}
	if v, ok := lookup(raw, "identity", "pods"); ok {
		switch v {
		case false:
			c.Identity.Pods = PodsOff
		case true:
			c.Identity.Pods = PodsOn
		}
	}
	return c, raw, nil
}

// trimYAMLError drops yaml.v2's "unmarshal errors:" header and indentation
// so that each "line N: ..." becomes its own line in the report.
func trimYAMLError(err error) error {
	msg, ok := strings.CutPrefix(err.Error(), "yaml: unmarshal errors:\n")
	if !ok {
		return err
	}
	var lines []string
	for l := range strings.SplitSeq(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, "yaml: "+l)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// checkShape compares the generic document v against the Go type t that
// encoding/json would decode it into.
func checkShape(t reflect.Type, v any, path string, errs *[]error) {
	if v == nil {
		return // null leaves the zero value, as encoding/json does
	}
	bad := func(want string) {
		where := path
		if where == "" {
			where = "top level"
		}
		*errs = append(*errs, fmt.Errorf("%s: want %s, got %s", where, want, describe(v)))
	}
	switch {
	case t == durationType:
		s, ok := v.(string)
		if !ok {
			bad(`a duration such as "10s"`)
			return
		}
		if _, err := time.ParseDuration(s); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %q is not a duration such as \"10s\" or \"1m30s\"", path, s))
		}
	case t == sizeType:
		var err error
		switch x := v.(type) {
		case json.Number:
			_, err = ParseSize(string(x))
		case string:
			_, err = ParseSize(x)
		default:
			bad(`a size such as "64MiB"`)
			return
		}
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", path, err))
		}
	case t.Kind() == reflect.Pointer:
		checkShape(t.Elem(), v, path, errs)
	case t.Kind() == reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			bad("a mapping")
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := fields[k]
			if !ok {
				*errs = append(*errs, fmt.Errorf("unknown key %q%s", join(path, k), suggest(k, fields)))
				continue
			}
			checkShape(f, m[k], join(path, k), errs)
		}
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		// The keys of a map are user data (claim names), not config keys:
		// only the values are checked, each named by its quoted key.
		m, ok := v.(map[string]any)
		if !ok {
			bad("a mapping")
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			kpath := fmt.Sprintf("%s[%q]", path, k)
			// Values are matched as strings, and YAML has already rewritten an
			// unquoted number (1.10 is 1.1, 0017 is 15): make the user quote it.
			if n, ok := m[k].(json.Number); ok && t.Elem().Kind() == reflect.String {
				*errs = append(*errs, fmt.Errorf("%s: want a string, got number %s (quote it: unquoted, YAML may rewrite it)", kpath, n))
				continue
			}
			checkShape(t.Elem(), m[k], kpath, errs)
		}
	case t.Kind() == reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			bad("a list")
			return
		}
		for i, e := range l {
			checkShape(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.String:
		switch v.(type) {
		case string, json.Number: // sigs.k8s.io/yaml turns numbers into strings
		case bool:
			if path == "metrics.listen" && v == false {
				return // unquoted off
			}
			if path == "identity.pods" {
				return // unquoted on/off, decoded as written
			}
			bad("a string (quote yes/no/on/off/true/false)")
		default:
			bad("a string")
		}
	case t.Kind() == reflect.Int:
		n, ok := v.(json.Number)
		if !ok {
			bad("an integer")
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			bad("an integer")
		}
	case t.Kind() == reflect.Bool:
		if _, ok := v.(bool); !ok {
			bad("true or false")
		}
	case t.Kind() == reflect.Uint32:
		n, ok := v.(json.Number)
		if !ok {
			bad("an integer")
			return
		}
		if _, err := strconv.ParseUint(string(n), 10, 32); err != nil {
			bad("an integer in 0..4294967295")
		}
	default:
		// A type added to types.go without a case here: fail loudly in tests.
		*errs = append(*errs, fmt.Errorf("%s: config type %s is not supported by the decoder", path, t))
	}
}

// jsonFields maps the exact json key of each decodable field to its type.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("string %q", v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	}
	return fmt.Sprintf("%T", v)
}

// suggest names the known key a typo most likely meant.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3
	for name := range fields {
		d := editDistance(strings.ToLower(key), strings.ToLower(name))
		if d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	if best == "" || bestDist > 0 && len(key) < 4 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// lookup walks raw along keys.
func lookup(raw any, keys ...string) (any, bool) {
	for _, k := range keys {
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, false
		}
		if raw, ok = m[k]; !ok {
			return nil, false
		}
	}
	return raw, true
}

// explicitZeros refuses a written 0 where 0 is not a usable value: left
// alone, SetDefaults would silently turn it into the default, which is not
// what someone writing "mark: 0" or "port: 0" meant.
func explicitZeros(raw any) []error {
	var errs []error
	for _, path := range [][]string{{"bpf", "mapSize"}, {"bpf", "mark"}, {"proxy", "port"}} {
		if v, ok := lookup(raw, path...); ok && v == json.Number("0") {
			errs = append(errs, fmt.Errorf("%s: 0 is not allowed (omit the key for the default)", strings.Join(path, ".")))
		}
	}
	// Draining for 0s (cut every session at once) is not what SetDefaults
	// would make of it.
	if v, ok := lookup(raw, "proxy", "drainTimeout"); ok {
		if s, isStr := v.(string); isStr {
			if d, err := time.ParseDuration(s); err == nil && d == 0 {
				errs = append(errs, fmt.Errorf("proxy.drainTimeout: %q is not allowed: omit the key for the default %s, or give a small duration such as 1ms to cut sessions at once", s, DefaultDrainTimeout))
			}
		}
	}
	// A tunnel's port 0 would silently become the default; a TLS port 0 is
	// documented as "the original port" and stays allowed.
	rules, _ := lookup(raw, "rules")
	list, _ := rules.([]any)
	for i, r := range list {
		if v, ok := lookup(r, "upstream", "tunnel", "port"); ok && v == json.Number("0") {
			errs = append(errs, fmt.Errorf("rules[%d].upstream.tunnel.port: 0 is not allowed (omit the key for the default %d)", i, DefaultTunnelPort))
		}
	}
	return errs
}
