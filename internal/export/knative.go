package export

import (
	"fmt"
	"strconv"
	"time"

	"github.com/faasvm/appliance/internal/function"
)

// maxScaleDownDelay is the longest scale-down-delay Knative accepts.
const maxScaleDownDelay = time.Hour

// knativeNameMax is the longest Service name whose revisions'
// names (<name>-00001) still fit Kubernetes' 63-character labels.
const knativeNameMax = 57

// knativeManifest is the function as a Knative Service. Scale settings map
// onto Knative's autoscaler, which computes the same thing the appliance's
// does: ceil(in flight / (target × utilization)) replicas between min-scale
// and max-scale, scaling down only after scale-down-delay.
func knativeManifest(s *function.Spec, image string, o ManifestOptions) (any, []string, error) {
	if len(s.Name) > knativeNameMax {
		return nil, nil, fmt.Errorf("name %s: Knative names each revision <name>-00001, which must fit in 63 characters; use at most %d for a Knative Service (or --plain)",
			s.Name, knativeNameMax)
	}
	var warnings []string
	delay := s.Scale.IdleTimeout
	if delay > maxScaleDownDelay {
		warnings = append(warnings, fmt.Sprintf("idleTimeout %s is above the %s Knative's scale-down-delay allows; exported as %s",
			s.Scale.IdleTimeout, maxScaleDownDelay, maxScaleDownDelay))
		delay = maxScaleDownDelay
	}
	if ts := timeoutSeconds(s); ts > 600 {
		warnings = append(warnings, fmt.Sprintf("timeoutSeconds %d is above Knative's default max-revision-timeout-seconds (600): raise it in config-defaults", ts))
	}
	conc := concurrency(s)
	if conc == 1 && !s.Scale.ConcurrencySet && s.Scale.MaxReplicas == 1 {
		warnings = append(warnings, fmt.Sprintf("exec mode: one request at a time per container (containerConcurrency 1) and maxReplicas 1, where the appliance runs %d at once in one VM: set concurrency in function.yaml to allow more",
			s.Scale.Concurrency))
	}
	tmplAnn := metricsAnnotations(map[string]string{
		"autoscaling.knative.dev/metric":                        "concurrency",
		"autoscaling.knative.dev/min-scale":                     strconv.Itoa(s.Scale.MinReplicas),
		"autoscaling.knative.dev/max-scale":                     strconv.Itoa(s.Scale.MaxReplicas),
		"autoscaling.knative.dev/target":                        strconv.Itoa(conc),
		"autoscaling.knative.dev/target-utilization-percentage": strconv.Itoa(utilizationPercent(s)),
		"autoscaling.knative.dev/scale-down-delay":              durationString(delay),
	})
	pod := podSpec{
		RuntimeClassName:             o.RuntimeClass,
		AutomountServiceAccountToken: ptr(false),
		EnableServiceLinks:           ptr(false),
		Containers:                   []container{functionContainer(s, image)},
		Volumes:                      secretVolumes(s),
	}
	svc := knativeService{
		typeMeta: typeMeta{APIVersion: "serving.knative.dev/v1", Kind: "Service"},
		Metadata: objectMeta{Name: s.Name, Namespace: o.Namespace, Labels: labels(s), Annotations: annotations(s)},
		Spec: knativeServiceSpec{Template: revisionTemplate{
			Metadata: templateMeta{Labels: labels(s), Annotations: tmplAnn},
			Spec:     revisionSpec{podSpec: pod, ContainerConcurrency: conc, TimeoutSeconds: timeoutSeconds(s)},
		}},
	}
	return svc, warnings, nil
}

func ptr[T any](v T) *T { return &v }
