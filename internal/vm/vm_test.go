package vm

import (
	"strings"
	"testing"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
)

// TestVMEncodeRoundTrip guards the json-iterator/reflect2 pin: an older
// reflect2 compiles but crashes at run time when a VM is encoded.
func TestVMEncodeRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		cpus   uint64
		memory string
	}{
		{name: "hello", cpus: 1, memory: "256MB"},
		{name: "big-one", cpus: 2, memory: "800MB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVM(tt.name)
			v.Spec.CPUs = tt.cpus
			size, err := meta.NewSizeFromString(tt.memory)
			if err != nil {
				t.Fatalf("size: %v", err)
			}
			v.Spec.Memory = size
			v.Spec.Image.OCI, _ = meta.NewOCIImageRef("faas/python3:latest")
			if err := ValidateVM(v); err != nil {
				t.Fatalf("ValidateVM: %v", err)
			}
			out, err := scheme.Serializer.EncodeYAML(v)
			if err != nil {
				t.Fatalf("EncodeYAML: %v", err)
			}
			if !strings.Contains(string(out), "kind: VM") {
				t.Errorf("encoded VM lacks kind: %s", out)
			}
			var back api.VM
			if err := scheme.Serializer.DecodeInto(out, &back); err != nil {
				t.Fatalf("DecodeInto: %v", err)
			}
			if back.Name != tt.name || back.UID != v.UID || back.Spec.CPUs != tt.cpus || back.Spec.Memory != size {
				t.Errorf("round trip: got name=%s uid=%s cpus=%d mem=%s, want %s %s %d %s",
					back.Name, back.UID, back.Spec.CPUs, back.Spec.Memory, tt.name, v.UID, tt.cpus, size)
			}
		})
	}
}
