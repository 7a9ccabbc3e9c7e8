module local/ignite-cli

go 1.16

require (
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/weaveworks/ignite v0.10.0
)

replace (
	github.com/docker/distribution => github.com/docker/distribution v0.0.0-20190711223531-1fb7fffdb266
	github.com/vishvananda/netlink => github.com/twelho/netlink v1.1.1-ageing
	vbom.ml/util => github.com/fvbommel/util v0.0.0-20160121211510-db5cfe13f5cc
)
