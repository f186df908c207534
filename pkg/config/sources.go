package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Sources says where a configuration comes from: a main file, a drop-in
// directory, or both (e.g. a Kubernetes ConfigMap mounted as a directory).
//
// Drop-ins are the directory's *.yaml and *.yml files in name order, each
// merged on top of what came before (the main file first):
//   - mappings merge key by key, recursively; a scalar in a later file wins;
//   - lists replace the earlier list (ports, destinations, peers,
//     inbound.services, redaction lists, ...), except the top-level rules
//     list, which appends: each file adds its rules, and a rule name used in
//     two files is an error (a later file cannot remove or redefine a rule);
//   - a key set to null goes back to its default.
//
// Hidden names (a leading dot) are skipped, which leaves out editor swap
// files and the ..data and ..2026_... entries of a ConfigMap volume: the
// visible names are read through the ..data symlink, so each load sees one
// consistent version of the ConfigMap. A visible symlink whose target is gone
// is a key being removed and is skipped.
//
// Every file is checked on its own first (YAML syntax, unknown keys, types,
// explicit zeros), so errors name the file and its key; problems found in
// the merged result name the file that set the key, and a rule by its index
// in its own file.
type Sources struct {
	// Base is the main configuration file; "" for none.
	Base string
	// BaseOptional skips a missing Base instead of failing (the default
	// --config path when a drop-in directory is given).
	BaseOptional bool
	// Dir is the drop-in directory; "" for none. It must exist.
	Dir string
}

// File is one configuration file's content.
type File struct {
	Name string // path, used in error messages
	Data []byte
}

// LoadFiles loads base (if not "") with the drop-ins of dir (if not "")
// merged on top; see Sources.
func LoadFiles(base, dir string) (*Config, error) {
	return Sources{Base: base, Dir: dir}.Load()
}

// Load reads, merges, decodes, defaults and validates the sources.
func (s Sources) Load() (*Config, error) {
	files, err := s.Read()
	if err != nil {
		return nil, err
	}
	return ParseFiles(files)
}

// String names the sources for messages.
func (s Sources) String() string {
	var parts []string
	if s.Base != "" {
		parts = append(parts, s.Base)
	}
	if s.Dir != "" {
		parts = append(parts, filepath.Join(s.Dir, "*.yaml"))
	}
	return strings.Join(parts, " + ")
}

// WatchDirs are the directories whose entries decide the configuration:
// Base's directory (a ConfigMap swaps a symlink there) and Dir.
func (s Sources) WatchDirs() []string {
	var dirs []string
	if s.Base != "" {
		dirs = append(dirs, filepath.Dir(s.Base))
	}
	if s.Dir != "" && !slices.Contains(dirs, filepath.Clean(s.Dir)) {
		dirs = append(dirs, filepath.Clean(s.Dir))
	}
	return dirs
}

// Read returns the files Load would merge, in order, without decoding them.
func (s Sources) Read() ([]File, error) {
	var files []File
	var baseInfo fs.FileInfo
	if s.Base != "" {
		data, err := os.ReadFile(s.Base)
		switch {
		case err == nil:
			files = append(files, File{Name: s.Base, Data: data})
			baseInfo, _ = os.Stat(s.Base)
		case errors.Is(err, fs.ErrNotExist) && s.BaseOptional:
		default:
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if s.Dir != "" {
		dropIns, err := readDropIns(s.Dir, baseInfo)
		if err != nil {
			return nil, err
		}
		files = append(files, dropIns...)
	}
	if len(files) == 0 {
		switch {
		case s.Base != "" && s.Dir != "":
			return nil, fmt.Errorf("config: no configuration: %s does not exist and %s has no *.yaml or *.yml file", s.Base, s.Dir)
		case s.Dir != "":
			return nil, fmt.Errorf("config: no configuration: %s has no *.yaml or *.yml file", s.Dir)
		default:
			return nil, errors.New("config: no configuration file given")
		}
	}
	return files, nil
}

// readDropIns reads dir's visible *.yaml and *.yml files in name order,
// leaving out base if it is one of them.
func readDropIns(dir string, base fs.FileInfo) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config directory: %w", err)
	}
	var files []File
	for _, e := range entries { // sorted by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path) // through the symlink
		if errors.Is(err, fs.ErrNotExist) {
			continue // a dangling symlink: a ConfigMap key being removed
		}
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("config: %s is not a regular file", path)
		}
		if base != nil && os.SameFile(base, fi) {
			continue // --config names a file inside --config-dir
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		files = append(files, File{Name: path, Data: data})
	}
	return files, nil
}

// ParseFiles merges files in order (see Sources), then decodes, defaults and
// validates the result. One file is exactly Load's behaviour.
func ParseFiles(files []File) (*Config, error) {
	switch len(files) {
	case 0:
		return nil, errors.New("config: no configuration file given")
	case 1:
		return parse(files[0].Data, files[0].Name)
	}
	m := &merger{prov: map[string][]string{}, merged: map[string]any{}}
	var errs []error
	for _, f := range files {
		m.names = append(m.names, f.Name)
		_, raw, ferrs := decode(f.Data)
		if len(ferrs) > 0 {
			errs = append(errs, joinPrefixed(f.Name, ferrs))
			continue
		}
		if zerr := joinPrefixed(f.Name, explicitZeros(raw)); zerr != nil {
			errs = append(errs, zerr)
		}
		if doc, ok := raw.(map[string]any); ok { // nil: an empty file
			m.file(doc, f.Name)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m.merged); err != nil {
		return nil, fmt.Errorf("config: merge %s: %w", strings.Join(m.names, " + "), err)
	}
	c, _, derrs := decode(buf.Bytes())
	if len(derrs) > 0 {
		// Each file passed on its own; the merge cannot add a problem.
		return nil, joinPrefixed(strings.Join(m.names, " + "), derrs)
	}
	c.SetDefaults()
	if verrs := c.validate(); len(verrs) > 0 {
		errs = append(errs, m.attribute(verrs))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// merger merges decoded documents and remembers which file set what.
type merger struct {
	names  []string
	merged map[string]any
	// prov maps a key path ("proxy.port", "inbound") to the files that set
	// it: the last writer of a value, every contributor to a mapping.
	prov map[string][]string
	// rules[i] is where merged rule i came from.
	rules []ruleOrigin
}

type ruleOrigin struct {
	file  string
	index int
}

func (m *merger) file(doc map[string]any, name string) {
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		v := doc[k]
		if k == "rules" {
			list, _ := v.([]any) // null adds nothing
			if len(list) == 0 {
				continue
			}
			cur, _ := m.merged["rules"].([]any)
			for j, r := range list {
				m.rules = append(m.rules, ruleOrigin{name, j})
				cur = append(cur, r)
			}
			m.merged["rules"] = cur
			m.contribute("rules", name)
			continue
		}
		m.value(m.merged, k, v, k, name)
	}
}

func (m *merger) value(dst map[string]any, key string, v any, path, name string) {
	if v == nil {
		delete(dst, key)
		m.forget(path)
		return
	}
	src, isMap := v.(map[string]any)
	if !isMap {
		dst[key] = v // scalars and lists replace
		m.forget(path)
		m.prov[path] = []string{name}
		return
	}
	sub, ok := dst[key].(map[string]any)
	if !ok {
		sub = map[string]any{}
		dst[key] = sub
		m.forget(path)
	}
	m.contribute(path, name)
	for _, k := range slices.Sorted(maps.Keys(src)) {
		m.value(sub, k, src[k], path+"."+k, name)
	}
}

func (m *merger) contribute(path, name string) {
	if !slices.Contains(m.prov[path], name) {
		m.prov[path] = append(m.prov[path], name)
	}
}

// forget drops what is recorded for path and below it.
func (m *merger) forget(path string) {
	for k := range m.prov {
		if k == path || strings.HasPrefix(k, path+".") || strings.HasPrefix(k, path+"[") {
			delete(m.prov, k)
		}
	}
}

// ruleRef is a reference to a merged rule with the key path after it.
var ruleRef = regexp.MustCompile(`\brules\[(\d+)\]((?:\.[A-Za-z0-9_]+|\[\d+\])*)`)

// attribute prefixes each validation problem with the file that set its key,
// and rewrites merged rule indexes to indexes in their own file.
func (m *merger) attribute(errs []error) error {
	var out []error
	for _, e := range errs {
		lines := strings.Split(e.Error(), "\n")
		for _, line := range lines {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			msg := m.describe(line)
			if len(lines) == 1 {
				out = append(out, &attributed{msg: msg, err: e})
			} else {
				out = append(out, errors.New(msg))
			}
		}
	}
	return errors.Join(out...)
}

func (m *merger) describe(line string) string {
	key, _, _ := strings.Cut(line, ": ")
	var where []string
	if sm := ruleRef.FindStringSubmatchIndex(key); sm != nil && sm[0] == 0 {
		if i, _ := strconv.Atoi(key[sm[2]:sm[3]]); i < len(m.rules) {
			where = []string{m.rules[i].file}
		}
	} else {
		where = m.lookup(key)
	}
	if len(where) == 0 {
		where = m.names
	}
	own := ""
	if len(where) == 1 {
		own = where[0]
	}
	line = ruleRef.ReplaceAllStringFunc(line, func(ref string) string {
		sm := ruleRef.FindStringSubmatch(ref)
		i, _ := strconv.Atoi(sm[1])
		if i >= len(m.rules) {
			return ref
		}
		o := m.rules[i]
		s := fmt.Sprintf("rules[%d]%s", o.index, sm[2])
		if o.file != own {
			s += " (in " + o.file + ")"
		}
		return s
	})
	return strings.Join(where, " + ") + ": " + line
}

// lookup finds the files behind key or its nearest recorded parent.
func (m *merger) lookup(key string) []string {
	for key != "" {
		if f, ok := m.prov[key]; ok {
			return f
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return nil
		}
		key = key[:i]
	}
	return nil
}

// attributed is a validation error restated with its file; it still wraps
// the original (errors.Is on OS errors keeps working).
type attributed struct {
	msg string
	err error
}

func (e *attributed) Error() string { return e.msg }
func (e *attributed) Unwrap() error { return e.err }
