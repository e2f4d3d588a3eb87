package deploy_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/batoncli"
	"sigs.k8s.io/yaml"
)

// helmBin is the pinned helm that `make tools` builds (BATON_HELM, set by
// the Makefile). Without it the chart tests skip, unless
// BATON_REQUIRE_HELM=1 (CI) makes that a failure.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("BATON_HELM"); h != "" {
		return h
	}
	if m, _ := filepath.Glob("../bin/tools/helm-*/helm"); len(m) > 0 {
		return m[0]
	}
	if os.Getenv("BATON_REQUIRE_HELM") == "1" {
		t.Fatal("no helm: run `make tools`")
	}
	t.Skip("no helm: `make tools` builds it (make test does)")
	return ""
}

// helmTemplate renders the chart with extra helm arguments and returns the
// objects by kind and the error output.
func helmTemplate(t *testing.T, args ...string) (map[string][]obj, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", "rel", "helm/baton", "--namespace", "inference",
		"--api-versions", "monitoring.coreos.com/v1/PodMonitor"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &helmError{err: err, stderr: stderr.String()}
	}
	byKind := map[string][]obj{}
	for _, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		var d obj
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		if d != nil {
			byKind[d["kind"].(string)] = append(byKind[d["kind"].(string)], d)
		}
	}
	return byKind, nil
}

type helmError struct {
	err    error
	stderr string
}

func (e *helmError) Error() string { return e.err.Error() + ": " + e.stderr }

// TestHelmChart checks what the chart's objects name in each other and in
// baton: the sidecar's command line is baton's (flags and BATON_*
// variables), the worker finds the socket, probes and the PodMonitor use the
// admin port, the grace period covers --grace, the etcd endpoints are the
// members, and the autoscalers' query is the recording rule's.
func TestHelmChart(t *testing.T) {
	sets, _ := filepath.Glob("helm/baton/ci/*.yaml")
	for _, values := range append([]string{""}, sets...) {
		name := "defaults"
		var args []string
		if values != "" {
			name, args = filepath.Base(values), []string{"--values", values}
		}
		t.Run(name, func(t *testing.T) {
			objs, err := helmTemplate(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			checkChartWorker(t, objs)
		})
	}
}

func checkChartWorker(t *testing.T, objs map[string][]obj) {
	if len(objs["Deployment"]) != 1 {
		t.Fatalf("%d Deployments, want 1", len(objs["Deployment"]))
	}
	dep := objs["Deployment"][0]
	pod := at(t, dep, "spec", "template", "spec").(obj)
	var side obj
	for _, c := range at(t, pod, "initContainers").([]any) {
		if c.(obj)["name"] == "baton" {
			side = c.(obj)
		}
	}
	if side == nil || side["restartPolicy"] != "Always" {
		t.Fatalf("no native sidecar (init container baton with restartPolicy Always): %v", side)
	}
	args := strs(t, side, "args")
	if checkBatonArgs(t, "chart sidecar", args) != "sidecar" {
		t.Fatalf("the sidecar runs %v", args)
	}
	f := flagsOf(args)
	env := map[string]string{}
	for _, e := range at(t, side, "env").([]any) {
		env[e.(obj)["name"].(string)], _ = e.(obj)["value"].(string)
	}
	// Every BATON_* variable is one of baton's (global or sidecar) flags'.
	vars := batonEnvVars(t)
	for name := range env {
		if strings.HasPrefix(name, "BATON_") && !vars[name] {
			t.Errorf("the sidecar's %s is no variable of baton or baton sidecar", name)
		}
	}
	adminPort := port(t, f["admin-addr"])
	if p := at(t, side, "ports", 0, "containerPort"); jsonNumber(p) != adminPort || at(t, side, "ports", 0, "name") != "admin" {
		t.Errorf("sidecar port %v, want admin %s", p, adminPort)
	}
	for probe, path := range map[string]string{"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if p := str(t, side, probe, "httpGet", "path"); p != path {
			t.Errorf("%s path %s, want %s", probe, p, path)
		}
		if p := at(t, side, probe, "httpGet", "port"); p != "admin" {
			t.Errorf("%s port %v, want admin", probe, p)
		}
	}
	var worker obj
	for _, c := range at(t, pod, "containers").([]any) {
		worker = c.(obj)
	}
	for _, e := range at(t, worker, "env").([]any) {
		if e.(obj)["name"] == "BATON_SOCKET" && e.(obj)["value"] != f["socket"] {
			t.Errorf("worker BATON_SOCKET %v, sidecar --socket %s", e.(obj)["value"], f["socket"])
		}
	}
	podGrace, err1 := strconv.Atoi(jsonNumber(pod["terminationGracePeriodSeconds"]))
	sidecarGrace, err2 := time.ParseDuration(f["grace"])
	if err1 != nil || err2 != nil || time.Duration(podGrace)*time.Second <= sidecarGrace {
		t.Errorf("terminationGracePeriodSeconds %v not above --grace %q", pod["terminationGracePeriodSeconds"], f["grace"])
	}
	// The endpoints are the members of the chart's etcd, in its scheme.
	if sts := objs["StatefulSet"]; len(sts) == 1 {
		n, _ := strconv.Atoi(jsonNumber(at(t, sts[0], "spec", "replicas")))
		eps := strings.Split(env["BATON_ENDPOINTS"], ",")
		if len(eps) != n {
			t.Errorf("BATON_ENDPOINTS %q for %d members", env["BATON_ENDPOINTS"], n)
		}
		svc := str(t, sts[0], "spec", "serviceName")
		for i, ep := range eps {
			want := sts[0]["metadata"].(obj)["name"].(string) + "-" + strconv.Itoa(i) + "." + svc + ".inference.svc:2379"
			if !strings.HasSuffix(ep, "://"+want) {
				t.Errorf("endpoint %s, want a URL of %s", ep, want)
			}
		}
	}
	for _, pm := range objs["PodMonitor"] {
		if p := at(t, pm, "spec", "podMetricsEndpoints", 0, "port"); p != "admin" && p != "metrics" {
			t.Errorf("PodMonitor %v scrapes port %v", pm["metadata"], p)
		}
	}
	// The auth Job runs `baton auth grant` as the release's user, on the
	// sidecars' endpoints and namespace.
	for _, job := range objs["Job"] {
		c := at(t, job, "spec", "template", "spec", "containers", 0).(obj)
		jargs := strs(t, c, "args")
		if got := checkBatonArgs(t, "chart auth job", jargs); got != "auth grant" {
			t.Errorf("the auth Job runs %q", got)
		}
		jf := flagsOf(jargs)
		if jf["endpoints"] != env["BATON_ENDPOINTS"] || jf["namespace"] != env["BATON_NAMESPACE"] || jf["user"] != env["BATON_ETCD_USER"] {
			t.Errorf("the auth Job grants %s on %s at %s; the sidecars are %s on %s at %s",
				jf["user"], jf["namespace"], jf["endpoints"], env["BATON_ETCD_USER"], env["BATON_NAMESPACE"], env["BATON_ENDPOINTS"])
		}
	}
	// The autoscalers select what the recording rule computes.
	rule := backlogRule(t)
	for _, so := range objs["ScaledObject"] {
		q := str(t, so, "spec", "triggers", 0, "metadata", "query")
		for _, part := range []string{"max by (", "baton_queue_depth_tasks{", `state=~"pending|claimed"`} {
			if !strings.Contains(q, part) || !strings.Contains(rule, part) {
				t.Errorf("KEDA query %q and recording rule %q do not both have %q", q, rule, part)
			}
		}
		for _, a := range args {
			if queue, ok := strings.CutPrefix(a, "--queue="); ok && !strings.Contains(q, queue) {
				t.Errorf("KEDA query %q leaves out queue %s", q, queue)
			}
		}
	}
}

// batonEnvVars returns the BATON_* variables of baton's global and sidecar
// flags.
func batonEnvVars(t *testing.T) map[string]bool {
	t.Helper()
	app := batoncli.New(io.Discard, io.Discard)
	vars := map[string]bool{}
	for _, f := range append(app.Flags, app.Command("sidecar").Flags...) {
		if e, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, v := range e.GetEnvVars() {
				vars[v] = true
			}
		}
	}
	if !vars["BATON_ENDPOINTS"] {
		t.Fatal("baton's flags name no BATON_ENDPOINTS")
	}
	return vars
}

// backlogRule is the expression of the recording rule
// baton:queue_backlog:tasks.
func backlogRule(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("observability/baton-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record == "baton:queue_backlog:tasks" {
				return r.Expr
			}
		}
	}
	t.Fatal("no recording rule baton:queue_backlog:tasks")
	return ""
}

// TestHelmChartRefusesBadValues: values that cannot work are refused by
// helm, naming the value.
func TestHelmChartRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "queues=null"}, "queues:"},
		{[]string{"--set", "namespace=a/b"}, "namespace:"},
		{[]string{"--set", "autoscaling.keda.enabled=true,autoscaling.hpa.enabled=true"}, "autoscaling:"},
		{[]string{"--set", "etcd.enabled=false"}, "etcd.endpoints:"},
		{[]string{"--set", "etcd.tls.enabled=true,etcd.tls.clientSecret=c"}, "etcd.tls.serverSecret:"},
		{[]string{"--set", "etcd.enabled=false,etcd.endpoints={https://etcd:2379},etcd.auth.enabled=true"}, "etcd.auth.passwordSecret:"},
	} {
		_, err := helmTemplate(t, c.set...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("helm template %v: got %v, want an error naming %s", c.set, err, c.want)
		}
	}
}
