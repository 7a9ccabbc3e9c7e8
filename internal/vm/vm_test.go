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

func TestSpecValidateMachine(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Spec)
		wantErr string // substring; "" for valid
	}{
		{name: "valid, no host files needed", change: func(*Spec) {}},
		{name: "no VM object", change: func(s *Spec) { s.VM = nil }, wantErr: "no VM object"},
		{name: "no UID", change: func(s *Spec) { s.VM.UID = "" }, wantErr: "needs a name and a UID"},
		{name: "no cpus", change: func(s *Spec) { s.VM.Spec.CPUs = 0 }, wantErr: "cpus must be at least 1"},
		{name: "too little memory", change: func(s *Spec) { s.VM.Spec.Memory = meta.NewSizeFromBytes(16 << 20) },
			wantErr: "below the 64MB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Spec{VM: NewVM("hello")}
			tt.change(s)
			err := s.ValidateMachine()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
			// Validate checks the same first, before any host file.
			if tt.wantErr != "" {
				if verr := s.Validate(); verr == nil || verr.Error() != err.Error() {
					t.Errorf("Validate: got %v, want %v", verr, err)
				}
			}
		})
	}
}
