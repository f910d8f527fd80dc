// Package helm renders the chart charts/defender-tenant-operator with Helm's own
// library, as `helm template` does, for the chart tests in this package and the
// end-to-end tests (test/e2e/helm_test.go), so that both check the same objects.
//
// It uses Helm's engine directly rather than pkg/action, which would compile in
// Helm's registry, storage and Kubernetes clients without changing what renders.
package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Release is what `helm install NAME --namespace NS` names.
type Release struct {
	Name      string
	Namespace string
}

// Rendered is what an install of the chart sends to the API server.
type Rendered struct {
	// CRDs are the chart's crds/ directory, which Helm installs before the rest.
	CRDs []*unstructured.Unstructured
	// Objects are the rendered templates, in the order of their file names.
	Objects []*unstructured.Unstructured
	// Notes is the rendered NOTES.txt, which `helm install` prints.
	Notes string
}

// All returns the CRDs, then the other objects: the order in which they can be created.
func (r *Rendered) All() []*unstructured.Unstructured {
	return slices.Concat(r.CRDs, r.Objects)
}

// ChartDir is the chart's directory, found from this file's so that it works from
// any package's tests. Built with -trimpath, the file's path is not on disk; then
// it is taken from the working directory of a test two levels down, as go test
// runs test/helm's and test/e2e's.
func ChartDir() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "..", "..", "charts", "defender-tenant-operator")
	}
	return filepath.Join("..", "..", "charts", "defender-tenant-operator")
}

// ParseValues reads values written as a values file.
func ParseValues(yamlText string) (map[string]any, error) {
	values, err := chartutil.ReadValues([]byte(yamlText))
	if err != nil {
		return nil, err
	}
	return values.AsMap(), nil
}

// Render renders the chart at dir for an install of release with values (nil for
// the defaults) over values.yaml, validating them against values.schema.json as
// `helm install` does.
func Render(dir string, release Release, values map[string]any) (*Rendered, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	top, err := chartutil.ToRenderValues(chrt, values,
		chartutil.ReleaseOptions{Name: release.Name, Namespace: release.Namespace, Revision: 1, IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chrt, top)
	if err != nil {
		return nil, err
	}
	r := &Rendered{}
	for _, crd := range chrt.CRDObjects() {
		objects, err := decode(crd.Filename, crd.File.Data)
		if err != nil {
			return nil, err
		}
		r.CRDs = append(r.CRDs, objects...)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})
	for _, name := range names {
		switch base := path.Base(name); {
		case base == "NOTES.txt":
			r.Notes = files[name]
			continue
		case strings.HasPrefix(base, "_") || !strings.HasSuffix(base, ".yaml"):
			continue
		}
		objects, err := decode(name, []byte(files[name]))
		if err != nil {
			return nil, err
		}
		for _, u := range objects {
			// Helm puts namespaced objects without a namespace into the release's.
			if u.GetNamespace() == "" && !clusterScoped[u.GetKind()] {
				return nil, fmt.Errorf("%s: %s %s has no namespace", name, u.GetKind(), u.GetName())
			}
		}
		r.Objects = append(r.Objects, objects...)
	}
	return r, nil
}

// clusterScoped are the kinds the chart installs that have no namespace.
var clusterScoped = map[string]bool{
	"CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// decode splits a YAML stream into objects, skipping empty documents (a template
// whose condition is false renders none).
func decode(name string, data []byte) ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(obj) == 0 {
			continue
		}
		objects = append(objects, &unstructured.Unstructured{Object: obj})
	}
}

// YAML writes objects as one YAML stream, as `helm template` prints them.
func YAML(objects []*unstructured.Unstructured) ([]byte, error) {
	var out bytes.Buffer
	for _, u := range objects {
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	return out.Bytes(), nil
}
