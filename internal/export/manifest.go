package export

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	"go.yaml.in/yaml/v3"

	"github.com/faasvm/appliance/internal/function"
)

// DefaultRuntimeClass is the Kata Containers runtime class for Firecracker
// (kata-deploy installs kata-fc, kata-qemu, kata-clh, ...).
const DefaultRuntimeClass = "kata-fc"

// ManifestOptions shape the manifests of a function.
type ManifestOptions struct {
	// Plain writes a Deployment, Service and HorizontalPodAutoscaler
	// instead of a Knative Service.
	Plain bool
	// RuntimeClass is the pod's runtimeClassName; "" omits it (the
	// cluster's default runtime, no VM per pod).
	RuntimeClass string
	// Namespace, when set, is written into every object.
	Namespace string
}

// Validate reports the first problem with o.
func (o ManifestOptions) Validate() error {
	if o.RuntimeClass != "" && !dns1123Subdomain.MatchString(o.RuntimeClass) {
		return fmt.Errorf("runtime class %q: not a valid Kubernetes name (lowercase letters, digits, '-' and '.')", o.RuntimeClass)
	}
	if o.Namespace != "" && !dns1123Label.MatchString(o.Namespace) {
		return fmt.Errorf("namespace %q: not a valid Kubernetes namespace (lowercase letters, digits and '-', at most 63)", o.Namespace)
	}
	return nil
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	dns1035Label     = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// ErrUnexportable is matched by the errors of a valid function that the
// cluster's rules cannot take as it is (a name Kubernetes refuses).
var ErrUnexportable = errors.New("cannot be exported")

// Manifest renders the function's manifests (YAML, documents separated by
// "---") with image as the container image, and returns what the user
// should know about settings that did not carry over exactly.
func Manifest(s *function.Spec, image string, o ManifestOptions) ([]byte, []string, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	if !dns1035Label.MatchString(s.Name) {
		return nil, nil, fmt.Errorf("function %s %w: Kubernetes Services need a name that starts with a letter and does not end with '-'; rename the folder", s.Name, ErrUnexportable)
	}
	var objs []any
	var warnings []string
	if o.Plain {
		var err error
		if objs, warnings, err = plainManifests(s, image, o); err != nil {
			return nil, nil, fmt.Errorf("function %s %w: %w", s.Name, ErrUnexportable, err)
		}
	} else {
		obj, w, err := knativeManifest(s, image, o)
		if err != nil {
			return nil, nil, fmt.Errorf("function %s %w: %w", s.Name, ErrUnexportable, err)
		}
		objs, warnings = []any{obj}, w
	}
	out, err := render(objs)
	if err != nil {
		return nil, nil, fmt.Errorf("function %s: rendering manifests: %w", s.Name, err)
	}
	return out, warnings, nil
}

// render writes objs as YAML documents.
func render(objs []any) ([]byte, error) {
	var buf bytes.Buffer
	for i, o := range objs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(o); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
