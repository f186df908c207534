package config

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// HasWorkloads reports whether any rule is limited to some workloads.
func (c *Config) HasWorkloads() bool {
	for _, r := range c.Rules {
		if len(r.Workloads) > 0 {
			return true
		}
	}
	return false
}

// NeedsPods reports whether a workload selector matches on pods.
func (c *Config) NeedsPods() bool {
	for _, r := range c.Rules {
		for _, w := range r.Workloads {
			if w.Namespace != "" || len(w.Labels) > 0 {
				return true
			}
		}
	}
	return false
}

// checkWorkloads validates rules[i].workloads and returns a canonical form
// of them ("" for none), so that two rules may share a port and prefix only
// when they select different workloads.
func (c *Config) checkWorkloads(p *problems, key string, r *Rule) string {
	if len(r.Workloads) == 0 {
		return ""
	}
	for i, w := range r.Workloads {
		wkey := fmt.Sprintf("%s.workloads[%d]", key, i)
		if w.Cgroup == "" && w.Namespace == "" && len(w.Labels) == 0 {
			p.add(wkey, "empty: set cgroup, namespace or labels")
		}
		if w.Cgroup != "" {
			if !strings.HasPrefix(w.Cgroup, "/") {
				p.add(wkey+".cgroup", "%q must start with / (a path below the cgroup2 mount)", w.Cgroup)
			} else if _, err := path.Match(w.Cgroup, "/"); err != nil {
				p.add(wkey+".cgroup", "%q is not a valid glob: %v", w.Cgroup, err)
			}
		}
		if w.Namespace != "" {
			if errs := validation.IsDNS1123Label(w.Namespace); len(errs) > 0 {
				p.add(wkey+".namespace", "%q is not a namespace name: %s", w.Namespace, strings.Join(errs, "; "))
			}
		}
		for k, v := range w.Labels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				p.add(fmt.Sprintf("%s.labels[%q]", wkey, k), "not a label key: %s", strings.Join(errs, "; "))
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				p.add(fmt.Sprintf("%s.labels[%q]", wkey, k), "%q is not a label value: %s", v, strings.Join(errs, "; "))
			}
		}
		if (w.Namespace != "" || len(w.Labels) > 0) && c.Identity.Pods == PodsOff {
			p.add(wkey, "matches on pods, but identity.pods is off")
		}
	}
	b, _ := json.Marshal(r.Workloads) // maps marshal with sorted keys
	return string(b)
}
