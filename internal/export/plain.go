package export

import (
	"fmt"

	"github.com/faasvm/appliance/internal/function"
)

// maxStabilization is the longest scale-down stabilization window an HPA
// accepts.
const maxStabilization = 3600

// plainManifests is the function as a Deployment, a ClusterIP Service and a
// HorizontalPodAutoscaler, for clusters without Knative. What Knative adds
// is missing: no scale to zero (at least one replica runs), no request
// queue, and the HPA scales on CPU (concurrency needs a custom metrics
// adapter).
func plainManifests(s *function.Spec, image string, o ManifestOptions) ([]any, []string, error) {
	var warnings []string
	replicas := max(s.Scale.MinReplicas, 1)
	if s.Scale.MinReplicas == 0 {
		warnings = append(warnings, "minReplicas 0: a Deployment cannot scale to zero; exported with 1 replica (use Knative for scale to zero)")
	}
	window := seconds(s.Scale.IdleTimeout)
	if window > maxStabilization {
		warnings = append(warnings, fmt.Sprintf("idleTimeout %s is above the HPA's longest scale-down window (1h); exported as 1h", s.Scale.IdleTimeout))
		window = maxStabilization
	}
	c := functionContainer(s, image)
	// The kubelet probes the pod directly, so readiness can be as quick as
	// the appliance's health checks (every 2s, three strikes).
	c.ReadinessProbe.PeriodSeconds, c.ReadinessProbe.TimeoutSeconds, c.ReadinessProbe.FailureThreshold = 2, 2, 3
	grace := timeoutSeconds(s) + 5
	podLabels := labels(s)
	selector := map[string]string{"app.kubernetes.io/name": s.Name}
	meta := objectMeta{Name: s.Name, Namespace: o.Namespace, Labels: labels(s), Annotations: annotations(s)}
	dep := deployment{
		typeMeta: typeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		Metadata: meta,
		Spec: deploymentSpec{
			Selector: labelSelector{MatchLabels: selector},
			// Zero downtime, like the appliance's redeploys: the new pod is
			// ready before an old one goes.
			Strategy: deploymentStrategy{Type: "RollingUpdate", RollingUpdate: rollingUpdate{MaxUnavailable: 0, MaxSurge: 1}},
			Template: podTemplate{
				Metadata: templateMeta{Labels: podLabels, Annotations: metricsAnnotations(annotations(s))},
				Spec: podSpec{
					RuntimeClassName:              o.RuntimeClass,
					AutomountServiceAccountToken:  ptr(false),
					EnableServiceLinks:            ptr(false),
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []container{c},
					Volumes:                       secretVolumes(s),
				},
			},
		},
	}
	svc := service{
		typeMeta: typeMeta{APIVersion: "v1", Kind: "Service"},
		Metadata: meta,
		Spec: serviceSpec{
			Type:     "ClusterIP",
			Selector: selector,
			Ports:    []servicePort{{Name: "http", Port: 80, TargetPort: "http1", Protocol: "TCP"}},
		},
	}
	hpa := horizontalPodAutoscaler{
		typeMeta: typeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		Metadata: meta,
		Spec: hpaSpec{
			ScaleTargetRef: crossVersionRef{APIVersion: "apps/v1", Kind: "Deployment", Name: s.Name},
			MinReplicas:    replicas,
			MaxReplicas:    max(s.Scale.MaxReplicas, replicas),
			Metrics: []metricSpec{{Type: "Resource", Resource: resourceMetric{
				Name: "cpu", Target: metricTarget{Type: "Utilization", AverageUtilization: utilizationPercent(s)},
			}}},
			Behavior: hpaBehavior{ScaleDown: scalingRules{StabilizationWindowSeconds: window}},
		},
	}
	return []any{dep, svc, hpa}, warnings, nil
}
