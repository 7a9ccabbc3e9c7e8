// Command kubecheck decodes Kubernetes manifests strictly with the real API
// types and validates them, for the tests of `faasvm export`. It lives in a
// module of its own because Knative Serving needs newer Kubernetes
// libraries than the appliance's module can take (its Ignite dependency
// pins old ones). scripts/kube-tools.sh builds it into .cache/bin.
//
//	kubecheck [-features k=v,...] [-defaults k=v,...] FILE...
//
// Every YAML document of every FILE is decoded by its apiVersion and kind
// with unknown and duplicate fields refused. A serving.knative.dev/v1
// Service then gets the defaults and the validation Knative's webhook gives
// it (SetDefaults, then Validate within a create), under the config-features
// and config-defaults values given (as a cluster's ConfigMaps would hold
// them; runtimeClassName needs kubernetes.podspec-runtimeclassname=enabled).
// Deployments, Services and HorizontalPodAutoscalers get the consistency
// checks a manifest can fail on its own (names, selectors that match the
// pod template, ports, replica bounds, scale target); the API server's
// dry run does the rest.
//
// It prints "ok <kind> <name>" per object, one line per problem and one
// "warning ..." line per warning Knative's webhook would return with an
// accepted object, and exits 1 when there is any problem.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	autoscalerconfig "knative.dev/serving/pkg/autoscaler/config"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kubecheck:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kubecheck", flag.ContinueOnError)
	features := fs.String("features", "kubernetes.podspec-runtimeclassname=enabled", "config-features values, k=v,...")
	defaults := fs.String("defaults", "", "config-defaults values, k=v,...")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("no manifest files given")
	}
	ctx, err := knativeContext(*features, *defaults)
	if err != nil {
		return err
	}
	problems := 0
	for _, file := range fs.Args() {
		objs, err := decodeFile(file)
		if err != nil {
			fmt.Fprintf(out, "%s: %v\n", file, err)
			problems++
			continue
		}
		for _, msg := range check(ctx, objs) {
			fmt.Fprintf(out, "%s: %s\n", file, msg)
			if !strings.HasPrefix(msg, "ok ") && !strings.HasPrefix(msg, "warning ") {
				problems++
			}
		}
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s)", problems)
	}
	return nil
}

// knativeContext is what Knative's webhook validates a Service in: the
// cluster's config (from k=v lists, as its ConfigMaps hold them), within
// a create.
func knativeContext(features, defaults string) (context.Context, error) {
	f, err := config.NewFeaturesConfigFromMap(pairs(features))
	if err != nil {
		return nil, fmt.Errorf("config-features: %w", err)
	}
	d, err := config.NewDefaultsConfigFromMap(pairs(defaults))
	if err != nil {
		return nil, fmt.Errorf("config-defaults: %w", err)
	}
	a, err := autoscalerconfig.NewConfigFromMap(nil)
	if err != nil {
		return nil, fmt.Errorf("config-autoscaler: %w", err)
	}
	ctx := config.ToContext(context.Background(), &config.Config{Features: f, Defaults: d, Autoscaler: a})
	return apis.WithinCreate(ctx), nil
}

func pairs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			m[k] = v
		}
	}
	return m
}

// scheme knows the kinds an export writes.
func scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		servingv1.AddToScheme, appsv1.AddToScheme, corev1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// decodeFile decodes every document of file strictly, by its apiVersion
// and kind.
func decodeFile(file string) ([]runtime.Object, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	s, err := scheme()
	if err != nil {
		return nil, err
	}
	dec := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var objs []runtime.Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("---")) {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		return nil, errors.New("no objects")
	}
	return objs, nil
}

// check validates each object, and the objects of one file together.
func check(ctx context.Context, objs []runtime.Object) []string {
	var msgs, warnings []string
	deployments := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			deployments[d.Name] = d
		}
	}
	for _, o := range objs {
		var kind, name string
		var errs []string
		switch v := o.(type) {
		case *servingv1.Service:
			kind, name = "Service(serving.knative.dev/v1)", v.Name
			v.SetDefaults(ctx)
			fe := v.Validate(ctx)
			if e := fe.Filter(apis.ErrorLevel); e != nil {
				errs = append(errs, strings.Split(e.Error(), "\n")...)
			}
			if w := fe.Filter(apis.WarningLevel); w != nil {
				for _, line := range strings.Split(w.Error(), "\n") {
					warnings = append(warnings, fmt.Sprintf("warning %s %s: %s", kind, name, line))
				}
			}
		case *appsv1.Deployment:
			kind, name = "Deployment", v.Name
			errs = checkDeployment(v)
		case *corev1.Service:
			kind, name = "Service", v.Name
			errs = checkService(v, deployments)
		case *autoscalingv2.HorizontalPodAutoscaler:
			kind, name = "HorizontalPodAutoscaler", v.Name
			errs = checkHPA(v, deployments)
		default:
			errs = []string{fmt.Sprintf("unexpected object %T", o)}
		}
		if len(errs) == 0 {
			msgs = append(msgs, fmt.Sprintf("ok %s %s", kind, name))
		}
		for _, e := range errs {
			msgs = append(msgs, fmt.Sprintf("%s %s: %s", kind, name, e))
		}
	}
	return append(msgs, warnings...)
}

func checkName(name string, dns1035 bool) []string {
	if dns1035 {
		return validation.IsDNS1035Label(name)
	}
	return validation.IsDNS1123Subdomain(name)
}

func checkDeployment(d *appsv1.Deployment) []string {
	errs := checkName(d.Name, false)
	if d.Spec.Selector == nil {
		return append(errs, "spec.selector is missing")
	}
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
	if len(d.Spec.Selector.MatchLabels) == 0 || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		errs = append(errs, "spec.selector does not match spec.template.metadata.labels")
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		errs = append(errs, "spec.replicas is negative")
	}
	if len(d.Spec.Template.Spec.Containers) == 0 {
		errs = append(errs, "no containers")
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				errs = append(errs, fmt.Sprintf("container %s: port %d out of range", c.Name, p.ContainerPort))
			}
		}
		for _, m := range c.VolumeMounts {
			found := false
			for _, v := range d.Spec.Template.Spec.Volumes {
				found = found || v.Name == m.Name
			}
			if !found {
				errs = append(errs, fmt.Sprintf("container %s: volumeMount %s names no volume", c.Name, m.Name))
			}
		}
	}
	return errs
}

func checkService(s *corev1.Service, deployments map[string]*appsv1.Deployment) []string {
	errs := checkName(s.Name, true)
	if len(s.Spec.Selector) == 0 {
		return append(errs, "spec.selector is empty")
	}
	matched := false
	for _, d := range deployments {
		matched = matched || labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
	}
	if !matched {
		errs = append(errs, "spec.selector matches no Deployment's pods in this file")
	}
	for _, p := range s.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Sprintf("port %d out of range", p.Port))
		}
	}
	return errs
}

func checkHPA(h *autoscalingv2.HorizontalPodAutoscaler, deployments map[string]*appsv1.Deployment) []string {
	errs := checkName(h.Name, false)
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || deployments[ref.Name] == nil {
		errs = append(errs, fmt.Sprintf("scaleTargetRef %s %s/%s is not a Deployment in this file", ref.APIVersion, ref.Kind, ref.Name))
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas < 1 {
		errs = append(errs, "minReplicas below 1")
	}
	if h.Spec.MinReplicas != nil && h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		errs = append(errs, "maxReplicas below minReplicas")
	}
	if len(h.Spec.Metrics) == 0 {
		errs = append(errs, "no metrics")
	}
	return errs
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
