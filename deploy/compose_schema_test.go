package deploy_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// composeSchema compiles the Compose Specification's JSON schema, checked
// in with its source and version (deploy/schemas/README.md).
func composeSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("schemas/compose-spec.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("schemas/compose-spec.json: %v", err)
	}
	const url = "file:///baton/deploy/schemas/compose-spec.json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validateCompose(s *jsonschema.Schema, y []byte) error {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// TestComposeMatchesTheSpecification validates docker-compose.yml against
// the Compose Specification's schema (no container engine runs here), and
// shows that the check refuses what `docker compose` would: a misspelt
// service key, a port of the wrong type.
func TestComposeMatchesTheSpecification(t *testing.T) {
	s := composeSchema(t)
	y, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := validateCompose(s, y); err != nil {
		t.Errorf("docker-compose.yml: %v", err)
	}
	for _, c := range []struct{ from, to, want string }{
		{"    restart: unless-stopped\n    depends_on: [etcd-0, etcd-1, etcd-2]", "    restart: unless-stopped\n    depends_onn: [etcd-0, etcd-1, etcd-2]", "depends_onn"},
		{`ports: ["9464:9464"]`, `ports: {admin: 9464}`, "ports"},
	} {
		bad := strings.Replace(string(y), c.from, c.to, 1)
		if bad == string(y) {
			t.Fatalf("docker-compose.yml has no %q to change", c.from)
		}
		if err := validateCompose(s, []byte(bad)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("with %q: got %v, want an error naming %s", c.to, err, c.want)
		}
	}
}
