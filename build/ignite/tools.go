//go:build tools

// Package tools pins the ignite CLI so that the appliance image can build
// it from the Go module proxy: `go install ...@v0.10.0` refuses ignite
// because its go.mod has replace directives, so this wrapper module repeats
// them (see go.mod) and builds github.com/weaveworks/ignite/cmd/ignite (and
// ignite-spawn, for building Ignite's sandbox image without a registry).
package tools

import (
	_ "github.com/weaveworks/ignite/cmd/ignite"
	_ "github.com/weaveworks/ignite/cmd/ignite-spawn"
)
