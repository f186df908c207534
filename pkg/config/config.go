package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Load reads, decodes, defaults and validates the config file at path.
// Every problem found is reported, one per line, prefixed with path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(data, path)
}

// Parse is Load without reading the file: data is decoded strictly, defaults
// are applied and everything is validated, including the files it names.
func Parse(data []byte) (*Config, error) {
	return parse(data, "config")
}

func parse(data []byte, prefix string) (*Config, error) {
	c, raw, errs := decode(data)
	if len(errs) > 0 {
		return nil, joinPrefixed(prefix, errs)
	}
	// Explicit zeros must be seen before SetDefaults hides them.
	errs = explicitZeros(raw)
	c.SetDefaults()
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, joinPrefixed(prefix, errs)
	}
	return c, nil
}

// Validate checks a defaulted config (see SetDefaults) and fills
// Rule.Prefixes, Peer.Prefixes and Peer.AddrPort. Parse and Load already
// call it.
func (c *Config) Validate() error {
	return joinPrefixed("config", c.validate())
}

// RuleByName returns the rule called name, or nil.
func (c *Config) RuleByName(name string) *Rule {
	for i := range c.Rules {
		if c.Rules[i].Name == name {
			return &c.Rules[i]
		}
	}
	return nil
}

// joinPrefixed puts every problem on its own prefixed line so a user sees
// all of them at once; wrapping keeps errors.Is working on OS errors.
func joinPrefixed(prefix string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		if !strings.Contains(e.Error(), "\n") {
			out = append(out, fmt.Errorf("%s: %w", prefix, e))
			continue
		}
		for line := range strings.SplitSeq(e.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, fmt.Errorf("%s: %s", prefix, line))
			}
		}
	}
	return errors.Join(out...)
}
