package export

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
)

// The container contract of an exported image. The agent's container mode
// (guest/agent/container.go) serves these; the labels and manifests name
// them.
const (
	// DataPort is where every request goes to the function.
	DataPort = protocol.AgentPort
	// ControlPort serves HealthPath and MetricsPath only; the data path
	// cannot reach it.
	ControlPort = 8081
	HealthPath  = "/health"
	MetricsPath = "/metrics"
	// AgentPath and ConfigPath are the agent and its config in the image.
	AgentPath  = "/faasvm/agent"
	ConfigPath = "/faasvm/function.json"
	// CodeDir holds the function's code, as in a VM.
	CodeDir = protocol.CodeDir
	// SecretsDir is where the function's secrets appear, one file per
	// secret (OpenFaaS's path).
	SecretsDir = "/var/openfaas/secrets"
	// User is the unprivileged uid and gid the function runs as.
	User = 65532
	// containerName names the function's container in a pod.
	containerName = "function"
	// timeoutMargin lets the agent's own 504 reach the client before the
	// platform's timeout cuts the request (the appliance's gateway keeps
	// the same margin).
	timeoutMargin = 2 * time.Second
)

// livenessCommand asks the agent's control listener whether the handler is
// alive (ready or still starting). An exec probe: Knative rewrites an
// httpGet liveness probe to the serving port unless its
// multi-container-probing feature is on, and that port is the function's.
func livenessCommand() []string { return []string{AgentPath, "health", "-live"} }

// resourceValues renders a spec's VM memory and vCPUs as Kubernetes
// quantities.
func resourceValues(s *function.Spec) (memory, cpu string) {
	mib := (s.VM.Spec.Memory.Bytes() + 1<<20 - 1) >> 20 // Ignite's MB are MiB
	return strconv.FormatUint(mib, 10) + "Mi", strconv.FormatUint(s.VM.Spec.CPUs, 10)
}

// timeoutSeconds is the function's timeout plus the margin, in whole
// seconds.
func timeoutSeconds(s *function.Spec) int {
	return int(math.Ceil((s.Timeout + timeoutMargin).Seconds()))
}

// functionContainer is the function's container, the same in both kinds of
// manifest.
func functionContainer(s *function.Spec, image string) container {
	memory, cpu := resourceValues(s)
	c := container{
		Name:  containerName,
		Image: image,
		Ports: []containerPort{{Name: "http1", ContainerPort: DataPort, Protocol: "TCP"}},
		Env:   envVars(s.Env),
		Resources: resources{
			// Requests equal limits: a Kata VM is sized from the limits,
			// and the appliance's VM has these as its own.
			Requests: map[string]string{"memory": memory, "cpu": cpu},
			Limits:   map[string]string{"memory": memory, "cpu": cpu},
		},
		ReadinessProbe: &probe{HTTPGet: &httpGetAction{Path: HealthPath, Port: ControlPort}},
		LivenessProbe: &probe{
			Exec:          &execAction{Command: livenessCommand()},
			PeriodSeconds: 10, TimeoutSeconds: 5, FailureThreshold: 3,
		},
		SecurityContext: securityContext{
			RunAsNonRoot: true, RunAsUser: User, RunAsGroup: User,
			Capabilities:   capabilities{Drop: []string{"ALL"}},
			SeccompProfile: seccompProfile{Type: "RuntimeDefault"},
		},
	}
	if len(s.Secrets) > 0 {
		c.VolumeMounts = []volumeMount{{Name: secretsVolume, MountPath: SecretsDir, ReadOnly: true}}
	}
	return c
}

// secretsVolume names the volume the function's secrets are projected in.
const secretsVolume = "faasvm-secrets"

// secretVolumes projects each secret named in the spec, key <name> of the
// Kubernetes Secret <name>, as the file SecretsDir/<name>. Values never
// appear in a manifest. The kubelet makes the files root's, so they are
// readable by all (0444): the function's user is not root, and only the
// function's container mounts the volume (not Knative's queue-proxy), so
// no one else sees them. Owner-only files would need a pod fsGroup, which
// Knative accepts only with its kubernetes.podspec-securitycontext flag.
func secretVolumes(s *function.Spec) []volume {
	if len(s.Secrets) == 0 {
		return nil
	}
	p := &projectedVolume{DefaultMode: 0o444}
	for _, name := range s.Secrets {
		p.Sources = append(p.Sources, volumeProjection{Secret: &secretProjection{
			Name: name, Items: []keyToPath{{Key: name, Path: name}},
		}})
	}
	return []volume{{Name: secretsVolume, Projected: p}}
}

// envVars lists env by name.
func envVars(env map[string]string) []envVar {
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]envVar, 0, len(names))
	for _, k := range names {
		out = append(out, envVar{Name: k, Value: env[k]})
	}
	return out
}

// labels are the labels of every object and pod of a function.
func labels(s *function.Spec) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       s.Name,
		"app.kubernetes.io/version":    s.Version(),
		"app.kubernetes.io/managed-by": "faasvm",
	}
}

// annotations record what the function is, beside the labels.
func annotations(s *function.Spec) map[string]string {
	return map[string]string{
		"faasvm.org/digest":  s.Digest,
		"faasvm.org/runtime": s.Runtime,
		"faasvm.org/mode":    s.Mode,
	}
}

// metricsAnnotations let a Prometheus that follows the usual pod
// annotations scrape the agent's invocation metrics.
func metricsAnnotations(m map[string]string) map[string]string {
	m["prometheus.io/scrape"] = "true"
	m["prometheus.io/port"] = strconv.Itoa(ControlPort)
	m["prometheus.io/path"] = MetricsPath
	return m
}

// concurrency is how many requests one container takes at once: the
// function's concurrency, except that exec mode (a process per request)
// takes one unless function.yaml set it.
func concurrency(s *function.Spec) int {
	if s.Mode == function.ModeExec && !s.Scale.ConcurrencySet {
		return 1
	}
	return s.Scale.Concurrency
}

// utilizationPercent is targetUtilization as a whole percentage (1-100).
func utilizationPercent(s *function.Spec) int {
	return min(max(int(math.Round(s.Scale.TargetUtilization*100)), 1), 100)
}

// seconds renders d as whole seconds, rounded up.
func seconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

func durationString(d time.Duration) string { return fmt.Sprintf("%ds", seconds(d)) }
