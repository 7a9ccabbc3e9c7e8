//go:build tools

// Package tools pins the ignite CLI so that the appliance image can build
// it from the Go module proxy: `go install ...@v0.10.0` refuses ignite
// because its go.mod has replace directives, so this wrapper module repeats
// them (see go.mod) and builds github.com/weaveworks/ignite/cmd/ignite.
package tools

import _ "github.com/weaveworks/ignite/cmd/ignite"
