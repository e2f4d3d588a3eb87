// Package deploy_test checks the deployment files without running them (no
// container engine in CI): every file parses, and what one file names in
// another (services, ports, paths, flags, metric data sources, versions)
// exists there. The dashboard's queries are checked against a real
// sidecar's /metrics in sidecar/metrics_test.go.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

type obj = map[string]any

func readYAML(t *testing.T, path string) []obj {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []obj
	for _, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(part) == "" {
			continue
		}
		var d obj
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
	return docs
}

// at walks a path of keys and indexes through nested maps and lists.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				t.Fatalf("at %v: %T is not a map", path, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: not a list with %d elements", path, k+1)
			}
			v = l[k]
		}
	}
	return v
}

func str(t *testing.T, v any, path ...any) string {
	t.Helper()
	s, ok := at(t, v, path...).(string)
	if !ok {
		t.Fatalf("at %v: not a string", path)
	}
	return s
}

func strs(t *testing.T, v any, path ...any) []string {
	t.Helper()
	var out []string
	l, _ := at(t, v, path...).([]any)
	for _, x := range l {
		out = append(out, x.(string))
	}
	return out
}

// flagsOf returns the long flags of args ("--name=value" or "--name value")
// with their values.
func flagsOf(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			continue
		}
		if name, v, ok := strings.Cut(a, "="); ok {
			out[name] = v
		} else if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			out[a] = args[i+1]
			i++
		} else {
			out[a] = ""
		}
	}
	return out
}

// checkBatonArgs checks that args are a valid baton command line: every
// flag exists, global flags before the command (or after it: every command
// has them too), command flags after it.
func checkBatonArgs(t *testing.T, where string, args []string) (command string) {
	t.Helper()
	app := batoncli.New(io.Discard, io.Discard)
	has := func(fs []cli.Flag, name string) bool {
		for _, f := range fs {
			if slices.Contains(f.Names(), name) {
				return true
			}
		}
		return false
	}
	var cmd *cli.Command
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			if cmd == nil {
				if cmd = app.Command(a); cmd == nil {
					t.Errorf("%s: no baton command %q", where, a)
					return a
				}
				command = a
				continue
			}
			for _, sub := range cmd.Subcommands { // "auth grant"
				if sub.Name == a {
					cmd, command = sub, command+" "+a
					break
				}
			}
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if cmd == nil && !has(app.Flags, name) {
			t.Errorf("%s: %s is not a global flag of baton", where, a)
		}
		if cmd != nil && !has(cmd.Flags, name) {
			t.Errorf("%s: %s is not a flag of baton %s", where, a, cmd.Name)
		}
	}
	return command
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

func exists(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// pins returns the name==version pins of a pip install line.
func pins(text string) map[string]string {
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(opentelemetry-[a-z0-9-]+)==([0-9.]+)`).FindAllStringSubmatch(text, -1) {
		out[m[1]] = m[2]
	}
	return out
}

func TestCompose(t *testing.T) {
	doc := readYAML(t, "docker-compose.yml")[0]
	services, _ := doc["services"].(obj)
	for _, s := range []string{"etcd-0", "etcd-1", "etcd-2", "baton", "worker", "otel-collector", "jaeger", "prometheus", "grafana"} {
		if services[s] == nil {
			t.Errorf("no service %s", s)
		}
	}
	// The etcd members form one cluster of three.
	var members []string
	for i := range 3 {
		name := "etcd-" + string(rune('0'+i))
		env := at(t, services, name, "environment").(obj)
		if env["ETCD_NAME"] != name || env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] != "http://"+name+":2380" || env["ETCD_ADVERTISE_CLIENT_URLS"] != "http://"+name+":2379" {
			t.Errorf("%s: environment %v", name, env)
		}
		members = append(members, name+"=http://"+name+":2380")
	}
	for i := range 3 {
		name := "etcd-" + string(rune('0'+i))
		if got := at(t, services, name, "environment", "ETCD_INITIAL_CLUSTER"); got != strings.Join(members, ",") {
			t.Errorf("%s: initial cluster %v, want %s", name, got, strings.Join(members, ","))
		}
	}

	// The sidecar: a valid command line reaching all three members, an
	// admin address that Prometheus scrapes, traces to the collector.
	args := strs(t, services, "baton", "command")
	if checkBatonArgs(t, "compose baton", args) != "sidecar" {
		t.Fatalf("compose baton runs %v, not baton sidecar", args)
	}
	f := flagsOf(args)
	for i := range 3 {
		if !strings.Contains(f["endpoints"], "etcd-"+string(rune('0'+i))+":2379") {
			t.Errorf("baton --endpoints %q lacks etcd-%d:2379", f["endpoints"], i)
		}
	}
	adminPort := port(t, f["admin-addr"])
	if !strings.HasPrefix(f["admin-addr"], "0.0.0.0:") {
		t.Errorf("baton --admin-addr %q is not reachable from the prometheus container", f["admin-addr"])
	}
	sock := f["socket"]
	for _, svc := range []string{"baton", "worker"} {
		env := at(t, services, svc, "environment").(obj)
		if env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://otel-collector:4317" || env["OTEL_EXPORTER_OTLP_PROTOCOL"] != "grpc" {
			t.Errorf("%s: OTEL environment %v", svc, env)
		}
		if !slices.Contains(strs(t, services, svc, "volumes"), "baton-run:"+filepath.Dir(sock)) {
			t.Errorf("%s does not mount baton-run at %s", svc, filepath.Dir(sock))
		}
	}
	wf := flagsOf(strs(t, services, "worker", "command"))
	if wf["socket"] != sock || wf["queue"] != f["queue"] {
		t.Errorf("worker --socket %q --queue %q, sidecar %q %q", wf["socket"], wf["queue"], sock, f["queue"])
	}
	if checkBatonArgs(t, "compose submit", strs(t, services, "submit", "command")) != "submit" {
		t.Error("the submit service does not run baton submit")
	}

	// Build contexts, Dockerfiles and bind-mounted files exist.
	for name, s := range services {
		if b, ok := s.(obj)["build"].(obj); ok {
			exists(t, filepath.Join(b["context"].(string), b["dockerfile"].(string)), name+" dockerfile")
		}
		vols, _ := s.(obj)["volumes"].([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(v.(string), ":")
			if strings.HasPrefix(src, ".") {
				exists(t, src, name+" volume "+src)
			} else if _, ok := doc["volumes"].(obj)[src]; !ok {
				t.Errorf("%s mounts volume %s, which is not declared", name, src)
			}
		}
	}

	// Prometheus scrapes the sidecar's admin port.
	prom := readYAML(t, "observability/prometheus.yml")[0]
	targets := strs(t, prom, "scrape_configs", 0, "static_configs", 0, "targets")
	if !slices.Contains(targets, "baton:"+adminPort) {
		t.Errorf("prometheus targets %v lack baton:%s", targets, adminPort)
	}

	// The collector receives OTLP gRPC on 4317 and exports to jaeger.
	col := readYAML(t, "observability/otel-collector.yaml")[0]
	if ep := str(t, col, "receivers", "otlp", "protocols", "grpc", "endpoint"); port(t, ep) != "4317" {
		t.Errorf("collector grpc receiver on %s", ep)
	}
	host, _, _ := net.SplitHostPort(str(t, col, "exporters", "otlp/jaeger", "endpoint"))
	if services[host] == nil {
		t.Errorf("collector exports to %s, not a compose service", host)
	}
	pipe := at(t, col, "service", "pipelines", "traces").(obj)
	for _, kind := range []string{"receivers", "processors", "exporters"} {
		for _, name := range strs(t, pipe, kind) {
			if at(t, col, kind, name) == nil && !slices.Contains([]string{"batch"}, name) {
				t.Errorf("pipeline names %s %s, which is not configured", kind, name)
			}
		}
	}

	// Grafana: the provisioned Prometheus is the dashboards' data source.
	ds := readYAML(t, "observability/grafana/provisioning/datasources/datasources.yaml")[0]
	var promUID string
	for _, d := range at(t, ds, "datasources").([]any) {
		if d.(obj)["type"] == "prometheus" {
			promUID = d.(obj)["uid"].(string)
			if !strings.Contains(d.(obj)["url"].(string), "prometheus:9090") {
				t.Errorf("prometheus data source url %v", d.(obj)["url"])
			}
		}
	}
	prov := readYAML(t, "observability/grafana/provisioning/dashboards/dashboards.yaml")[0]
	dashPath := str(t, prov, "providers", 0, "options", "path")
	if !slices.Contains(strs(t, services, "grafana", "volumes"), "./observability/grafana/dashboards:"+dashPath+":ro") {
		t.Errorf("grafana does not mount the dashboards at %s", dashPath)
	}
	b, err := os.ReadFile("observability/grafana/dashboards/baton.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash obj
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var uids []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case obj:
			if d, ok := v["datasource"].(obj); ok {
				uids = append(uids, d["uid"].(string))
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	for _, u := range uids {
		if u != promUID {
			t.Errorf("dashboard uses data source %q, provisioned Prometheus is %q", u, promUID)
		}
	}
	if len(uids) == 0 {
		t.Error("dashboard names no data source")
	}
}

func TestDockerfiles(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mod))[1]
	for _, want := range []string{"FROM golang:" + goVersion + " AS build", "./cmd/baton", "COPY --from=build", `ENTRYPOINT ["/usr/local/bin/baton"]`, "batoncli.Version="} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
	exists(t, "../.dockerignore", ".dockerignore of the build context")

	// The worker image installs the OpenTelemetry versions the tests run
	// with (make deps-py), and runs the example worker.
	w, err := os.ReadFile("worker.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	got, want := pins(string(w)), pins(string(ci))
	if len(got) == 0 {
		t.Error("worker.Dockerfile pins no OpenTelemetry package")
	}
	for name, v := range got {
		if want[name] != v {
			t.Errorf("worker.Dockerfile pins %s==%s, the Makefile %q", name, v, want[name])
		}
	}
	for _, p := range []string{"../clients/python", "../examples/python-worker/tts_worker"} {
		exists(t, p, "worker.Dockerfile source")
	}
	if !bytes.Contains(w, []byte(`"-m", "tts_worker"`)) {
		t.Error("worker.Dockerfile does not run tts_worker")
	}
}

func TestKubernetes(t *testing.T) {
	docs := readYAML(t, "k8s/tts-worker.yaml")
	var dep obj
	for _, d := range docs {
		if d["kind"] == "Deployment" {
			dep = d
		}
	}
	if dep == nil {
		t.Fatal("no Deployment in k8s/tts-worker.yaml")
	}
	pod := at(t, dep, "spec", "template", "spec").(obj)
	inits, _ := pod["initContainers"].([]any)
	var side obj
	for _, c := range inits {
		if c.(obj)["name"] == "baton" {
			side = c.(obj)
		}
	}
	if side == nil || side["restartPolicy"] != "Always" {
		t.Fatalf("no native sidecar (init container baton with restartPolicy Always): %v", side)
	}
	args := strs(t, side, "args")
	if checkBatonArgs(t, "k8s baton", args) != "sidecar" {
		t.Fatalf("the sidecar runs %v", args)
	}
	f := flagsOf(args)
	adminPort := port(t, f["admin-addr"])
	var portName string
	for _, p := range at(t, side, "ports").([]any) {
		if jsonNumber(p.(obj)["containerPort"]) == adminPort {
			portName = p.(obj)["name"].(string)
		}
	}
	if portName == "" {
		t.Fatalf("no container port %s for --admin-addr", adminPort)
	}
	for probe, path := range map[string]string{"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if p := str(t, side, probe, "httpGet", "path"); p != path {
			t.Errorf("%s path %s, want %s", probe, p, path)
		}
		if p := at(t, side, probe, "httpGet", "port"); p != portName && jsonNumber(p) != adminPort {
			t.Errorf("%s port %v, want %s", probe, p, portName)
		}
	}
	ann := at(t, dep, "spec", "template", "metadata", "annotations").(obj)
	if ann["prometheus.io/port"] != adminPort || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations %v, admin port %s", ann, adminPort)
	}
	// Sidecar and worker share the socket's directory.
	sockDir := filepath.Dir(f["socket"])
	mountOf := func(c obj) string {
		for _, m := range at(t, c, "volumeMounts").([]any) {
			if m.(obj)["mountPath"] == sockDir {
				return m.(obj)["name"].(string)
			}
		}
		return ""
	}
	vol := mountOf(side)
	if vol == "" {
		t.Fatalf("the sidecar does not mount %s", sockDir)
	}
	var worker obj
	for _, c := range at(t, pod, "containers").([]any) {
		worker = c.(obj)
	}
	if mountOf(worker) != vol {
		t.Errorf("the worker does not mount volume %s at %s", vol, sockDir)
	}
	for _, e := range at(t, worker, "env").([]any) {
		if e.(obj)["name"] == "BATON_SOCKET" && e.(obj)["value"] != f["socket"] {
			t.Errorf("worker BATON_SOCKET %v, sidecar --socket %s", e.(obj)["value"], f["socket"])
		}
	}
	// The pod's grace period covers the sidecar's --grace.
	podGrace, err1 := strconv.Atoi(jsonNumber(pod["terminationGracePeriodSeconds"]))
	sidecarGrace, err2 := time.ParseDuration(f["grace"])
	if err1 != nil || err2 != nil || time.Duration(podGrace)*time.Second <= sidecarGrace {
		t.Errorf("terminationGracePeriodSeconds %v not above --grace %q", pod["terminationGracePeriodSeconds"], f["grace"])
	}

	scrape := readYAML(t, "k8s/prometheus-scrape.yaml")[0]
	if str(t, scrape, "scrape_configs", 0, "job_name") != "baton" {
		t.Error("prometheus-scrape.yaml: no baton job")
	}
	found := false
	for _, r := range at(t, scrape, "scrape_configs", 0, "relabel_configs").([]any) {
		if r.(obj)["regex"] == portName {
			found = true
		}
	}
	if !found {
		t.Errorf("prometheus-scrape.yaml does not keep the %q port", portName)
	}
}

// jsonNumber renders a YAML number as its decimal string.
func jsonNumber(v any) string {
	switch n := v.(type) {
	case float64:
		b, _ := json.Marshal(n)
		return string(b)
	case string:
		return n
	}
	return ""
}
