// Package version carries the build's version, set with -ldflags -X.
package version

// Version is overridden at build time: -X github.com/intransit/intransit/pkg/version.Version=v1.2.3
var Version = "dev"
