// Package kubecheck validates every object the Helm chart renders, offline
// and strictly: built-in kinds are decoded into their k8s.io/api types with
// unknown fields refused, custom resources (KEDA's ScaledObject, the
// Prometheus Operator's PodMonitor) are checked against the OpenAPI schema
// of their published CRD (deploy/schemas), with unknown fields refused as
// well. It is its own Go module so that the k8s.io types stay out of the
// sidecar's go.mod (docs/decisions.md, D-deploy1); its go.mod also pins helm
// and promtool as tools, which the Makefile builds from it (D-deploy2).
//
// `make test-deploy` runs it with BATON_HELM set to the pinned helm.
package kubecheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const chart = "../helm/baton"

// kubeVersion is the oldest Kubernetes the chart supports (native sidecars).
const kubeVersion = "1.29.0"

// builtin maps apiVersion/kind to a new value of its Go type.
var builtin = map[string]func() any{
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"batch/v1/Job":                           func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// crds maps apiVersion/kind to the CRD file whose schema validates it.
var crds = map[string]string{
	"keda.sh/v1alpha1/ScaledObject":       "../schemas/keda.sh_scaledobjects.yaml",
	"monitoring.coreos.com/v1/PodMonitor": "../schemas/monitoring.coreos.com_podmonitors.yaml",
}

func helm(t *testing.T) string {
	t.Helper()
	h := os.Getenv("BATON_HELM")
	if h == "" {
		t.Skip("BATON_HELM is not set: run `make test-deploy` (it builds the pinned helm)")
	}
	return h
}

// render runs helm template with the values file (none if "") and the
// Prometheus Operator's and KEDA's APIs announced, and returns the objects.
func render(t *testing.T, values string) [][]byte {
	t.Helper()
	args := []string{"template", "rel", chart, "--namespace", "inference", "--kube-version", kubeVersion,
		"--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--api-versions", "keda.sh/v1alpha1/ScaledObject"}
	if values != "" {
		args = append(args, "--values", values)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm(t), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		// Drop comment-only documents (a template that rendered nothing).
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) == "" {
			continue
		}
		docs = append(docs, []byte(d))
	}
	return docs
}

// check validates one rendered object and returns its apiVersion/kind.
func check(t *testing.T, doc []byte, schemas map[string]*jsonschema.Schema) (string, error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return "", fmt.Errorf("not a Kubernetes object: %w", err)
	}
	gvk := head.APIVersion + "/" + head.Kind
	name := head.Metadata.Name
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return gvk, fmt.Errorf("%s: metadata.name %q: %s", gvk, name, strings.Join(errs, "; "))
	}
	for k, v := range head.Metadata.Labels {
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
			return gvk, fmt.Errorf("%s %s: label %s=%s: %s", gvk, name, k, v, strings.Join(errs, "; "))
		}
	}
	if newObj, ok := builtin[gvk]; ok {
		if err := yaml.UnmarshalStrict(doc, newObj()); err != nil {
			return gvk, fmt.Errorf("%s %s: %w", gvk, name, err)
		}
		return gvk, nil
	}
	s, ok := schemas[gvk]
	if !ok {
		return gvk, fmt.Errorf("%s %s: no type or schema to validate this kind against: add one", gvk, name)
	}
	// metadata is "type: object" in a CRD's schema: decode it strictly.
	var meta struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return gvk, err
	}
	var om metav1.ObjectMeta
	dec := json.NewDecoder(bytes.NewReader(meta.Metadata))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&om); err != nil {
		return gvk, fmt.Errorf("%s %s: metadata: %w", gvk, name, err)
	}
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return gvk, err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return gvk, err
	}
	if err := s.Validate(v); err != nil {
		return gvk, fmt.Errorf("%s %s: %w", gvk, name, err)
	}
	return gvk, nil
}

// crdSchemas compiles the OpenAPI schema of each CRD's version, made
// strict: an object schema that lists its properties refuses others
// (what `kubectl apply --validate=strict` does with pruned fields), unless
// it says x-kubernetes-preserve-unknown-fields.
func crdSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	out := map[string]*jsonschema.Schema{}
	for gvk, file := range crds {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Group    string `json:"group"`
				Versions []struct {
					Name   string `json:"name"`
					Schema struct {
						OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		found := false
		for _, v := range crd.Spec.Versions {
			if crd.Spec.Group+"/"+v.Name+"/" != strings.TrimSuffix(gvk, gvkKind(gvk)) {
				continue
			}
			strict(v.Schema.OpenAPIV3Schema)
			j, err := json.Marshal(v.Schema.OpenAPIV3Schema)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
			if err != nil {
				t.Fatal(err)
			}
			url := "file:///" + filepath.Base(file) + "/" + v.Name
			if err := c.AddResource(url, doc); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			s, err := c.Compile(url)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			out[gvk] = s
			found = true
		}
		if !found {
			t.Fatalf("%s has no version for %s", file, gvk)
		}
	}
	return out
}

func gvkKind(gvk string) string { return gvk[strings.LastIndex(gvk, "/")+1:] }

// strict sets additionalProperties: false on every object schema with
// properties and no rule of its own for other properties.
func strict(s map[string]any) {
	if props, ok := s["properties"].(map[string]any); ok {
		_, has := s["additionalProperties"]
		if preserve, _ := s["x-kubernetes-preserve-unknown-fields"].(bool); !has && !preserve {
			s["additionalProperties"] = false
		}
		for _, p := range props {
			if m, ok := p.(map[string]any); ok {
				strict(m)
			}
		}
	}
	for _, k := range []string{"items", "additionalProperties"} {
		if m, ok := s[k].(map[string]any); ok {
			strict(m)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if l, ok := s[k].([]any); ok {
			for _, x := range l {
				if m, ok := x.(map[string]any); ok {
					strict(m)
				}
			}
		}
	}
}

// TestEveryRenderedObjectIsValid renders the chart with its default values
// and with every value set in its ci/ directory, and validates every object.
// Between them the value sets must render every kind the chart has.
func TestEveryRenderedObjectIsValid(t *testing.T) {
	schemas := crdSchemas(t)
	sets, err := filepath.Glob(filepath.Join(chart, "ci", "*.yaml"))
	if err != nil || len(sets) == 0 {
		t.Fatalf("no value sets in %s/ci: %v", chart, err)
	}
	seen := map[string]int{}
	for _, values := range append([]string{""}, sets...) {
		name := "defaults"
		if values != "" {
			name = filepath.Base(values)
		}
		t.Run(name, func(t *testing.T) {
			docs := render(t, values)
			if len(docs) == 0 {
				t.Fatal("the chart rendered nothing")
			}
			for _, d := range docs {
				gvk, err := check(t, d, schemas)
				if err != nil {
					t.Error(err)
				}
				seen[gvk]++
			}
		})
	}
	for gvk := range builtin {
		if seen[gvk] == 0 {
			t.Errorf("no value set renders a %s", gvk)
		}
	}
	for gvk := range crds {
		if seen[gvk] == 0 {
			t.Errorf("no value set renders a %s", gvk)
		}
	}
}

// TestValidationRefusesUnknownFields shows that the check is strict: a
// misspelt field, in a built-in kind and in a custom resource, is refused
// with its name.
func TestValidationRefusesUnknownFields(t *testing.T) {
	schemas := crdSchemas(t)
	for _, c := range []struct{ doc, field string }{
		{"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  replicaz: 2\n  selector: {matchLabels: {a: b}}\n", "replicaz"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: s, labelz: {a: b}}\nspec: {ports: [{port: 1}]}\n", "labelz"},
		{"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: w}\nspec:\n  scaleTargetRef: {name: w}\n  minReplicas: 0\n  triggers: [{type: prometheus, metadata: {query: x}}]\n", "minReplicas"},
		{"apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: p}\nspec:\n  selector: {}\n  podMetricsEndpoints: [{port: admin, intervall: 30s}]\n", "intervall"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "no type or schema"},
	} {
		_, err := check(t, []byte(c.doc), schemas)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%q: got %v, want an error naming %s", c.doc, err, c.field)
		}
	}
}
