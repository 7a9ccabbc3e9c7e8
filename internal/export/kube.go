package export

// The parts of the Kubernetes and Knative API objects an export writes,
// with the API's field names. The appliance's module cannot take the real
// API types (its Ignite dependency pins old Kubernetes libraries), so the
// tests decode every manifest strictly with the real types and validate it
// (build/exportcheck's kubecheck, and a kube-apiserver dry run).

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

// knativeService is serving.knative.dev/v1 Service.
type knativeService struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta         `yaml:"metadata"`
	Spec     knativeServiceSpec `yaml:"spec"`
}

type knativeServiceSpec struct {
	Template revisionTemplate `yaml:"template"`
}

type revisionTemplate struct {
	Metadata templateMeta `yaml:"metadata"`
	Spec     revisionSpec `yaml:"spec"`
}

// templateMeta is a template's metadata: no name of its own.
type templateMeta struct {
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// revisionSpec is a Knative RevisionSpec: a pod spec plus two fields.
type revisionSpec struct {
	podSpec              `yaml:",inline"`
	ContainerConcurrency int `yaml:"containerConcurrency"`
	TimeoutSeconds       int `yaml:"timeoutSeconds"`
}

type podSpec struct {
	RuntimeClassName              string      `yaml:"runtimeClassName,omitempty"`
	AutomountServiceAccountToken  *bool       `yaml:"automountServiceAccountToken,omitempty"`
	EnableServiceLinks            *bool       `yaml:"enableServiceLinks,omitempty"`
	TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds,omitempty"`
	Containers                    []container `yaml:"containers"`
	Volumes                       []volume    `yaml:"volumes,omitempty"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Ports           []containerPort `yaml:"ports"`
	Env             []envVar        `yaml:"env,omitempty"`
	Resources       resources       `yaml:"resources"`
	ReadinessProbe  *probe          `yaml:"readinessProbe,omitempty"`
	LivenessProbe   *probe          `yaml:"livenessProbe,omitempty"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts,omitempty"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type envVar struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type resources struct {
	Requests map[string]string `yaml:"requests"`
	Limits   map[string]string `yaml:"limits"`
}

type probe struct {
	HTTPGet             *httpGetAction `yaml:"httpGet,omitempty"`
	Exec                *execAction    `yaml:"exec,omitempty"`
	InitialDelaySeconds int            `yaml:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int            `yaml:"periodSeconds,omitempty"`
	TimeoutSeconds      int            `yaml:"timeoutSeconds,omitempty"`
	FailureThreshold    int            `yaml:"failureThreshold,omitempty"`
}

type httpGetAction struct {
	Path string `yaml:"path"`
	Port int    `yaml:"port"`
}

type execAction struct {
	Command []string `yaml:"command"`
}

type securityContext struct {
	RunAsNonRoot             bool           `yaml:"runAsNonRoot"`
	RunAsUser                int            `yaml:"runAsUser"`
	RunAsGroup               int            `yaml:"runAsGroup"`
	AllowPrivilegeEscalation bool           `yaml:"allowPrivilegeEscalation"`
	Capabilities             capabilities   `yaml:"capabilities"`
	SeccompProfile           seccompProfile `yaml:"seccompProfile"`
}

type capabilities struct {
	Drop []string `yaml:"drop"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type volume struct {
	Name      string           `yaml:"name"`
	Projected *projectedVolume `yaml:"projected,omitempty"`
}

type projectedVolume struct {
	DefaultMode int                `yaml:"defaultMode"`
	Sources     []volumeProjection `yaml:"sources"`
}

type volumeProjection struct {
	Secret *secretProjection `yaml:"secret,omitempty"`
}

type secretProjection struct {
	Name  string      `yaml:"name"`
	Items []keyToPath `yaml:"items"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

// deployment is apps/v1 Deployment.
type deployment struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta     `yaml:"metadata"`
	Spec     deploymentSpec `yaml:"spec"`
}

type deploymentSpec struct {
	// Replicas is left out: the HPA owns it (a re-apply would reset it).
	Replicas *int               `yaml:"replicas,omitempty"`
	Selector labelSelector      `yaml:"selector"`
	Strategy deploymentStrategy `yaml:"strategy"`
	Template podTemplate        `yaml:"template"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deploymentStrategy struct {
	Type          string        `yaml:"type"`
	RollingUpdate rollingUpdate `yaml:"rollingUpdate"`
}

type rollingUpdate struct {
	MaxUnavailable int `yaml:"maxUnavailable"`
	MaxSurge       int `yaml:"maxSurge"`
}

type podTemplate struct {
	Metadata templateMeta `yaml:"metadata"`
	Spec     podSpec      `yaml:"spec"`
}

// service is v1 Service.
type service struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta  `yaml:"metadata"`
	Spec     serviceSpec `yaml:"spec"`
}

type serviceSpec struct {
	Type     string            `yaml:"type"`
	Selector map[string]string `yaml:"selector"`
	Ports    []servicePort     `yaml:"ports"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"`
	Protocol   string `yaml:"protocol"`
}

// horizontalPodAutoscaler is autoscaling/v2 HorizontalPodAutoscaler.
type horizontalPodAutoscaler struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     hpaSpec    `yaml:"spec"`
}

type hpaSpec struct {
	ScaleTargetRef crossVersionRef `yaml:"scaleTargetRef"`
	MinReplicas    int             `yaml:"minReplicas"`
	MaxReplicas    int             `yaml:"maxReplicas"`
	Metrics        []metricSpec    `yaml:"metrics"`
	Behavior       hpaBehavior     `yaml:"behavior"`
}

type crossVersionRef struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string `yaml:"name"`
}

type metricSpec struct {
	Type     string         `yaml:"type"`
	Resource resourceMetric `yaml:"resource"`
}

type resourceMetric struct {
	Name   string       `yaml:"name"`
	Target metricTarget `yaml:"target"`
}

type metricTarget struct {
	Type               string `yaml:"type"`
	AverageUtilization int    `yaml:"averageUtilization"`
}

type hpaBehavior struct {
	ScaleDown scalingRules `yaml:"scaleDown"`
}

type scalingRules struct {
	StabilizationWindowSeconds int `yaml:"stabilizationWindowSeconds"`
}
