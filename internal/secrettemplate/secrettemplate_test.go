package secrettemplate

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var testValues = Values{
	AccessToken: "eyJ0eXAiOiJKV1QifQ.eyJ0aWQiOiJ4In0.c2ln",
	TokenType:   "Bearer",
	ExpiresAt:   "2026-11-21T12:59:59Z",
	TenantID:    "4b1d3c9e-2f6a-4e8b-9d7c-1a2b3c4d5e6f",
	Resource:    "https://api.security.microsoft.com",
}

func TestRenderUsesTheFiveValues(t *testing.T) {
	got, err := Render(map[string]string{
		"authorization": "Bearer {{ .AccessToken }}",
		"siem.json":     `{"tenant":"{{ .TenantID }}","resource":{{ printf "%q" .Resource }},"expires":"{{ .ExpiresAt }}","type":"{{ .TokenType }}"}`,
		"plain":         "no action",
	}, testValues)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"authorization": "Bearer " + testValues.AccessToken,
		"siem.json":     `{"tenant":"4b1d3c9e-2f6a-4e8b-9d7c-1a2b3c4d5e6f","resource":"https://api.security.microsoft.com","expires":"2026-11-21T12:59:59Z","type":"Bearer"}`,
		"plain":         "no action",
	}
	if len(got) != len(want) {
		t.Fatalf("keys = %v, want %v", len(got), len(want))
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestRenderRefuses(t *testing.T) {
	long := strings.Repeat("x", MaxTemplateBytes+1)
	tests := []struct {
		name     string
		key      string
		template string
		inText   string
	}{
		{"does not parse", "k", "{{ .AccessToken ", "unclosed action"},
		{"unknown field", "k", "{{ .Password }}", "can't evaluate field Password"},
		{"env is no function", "k", `{{ env "HOME" }}`, `function "env" not defined`},
		{"call", "k", "{{ call .AccessToken }}", `function "call" is not allowed`},
		{"call in a branch", "k", "{{ if .TenantID }}{{ else }}{{ call .X }}{{ end }}", `function "call" is not allowed`},
		{"range over an integer", "k", "{{ range 1000000000 }}{{ end }}", "range is not allowed"},
		{"range nested in with", "k", "{{ with .TenantID }}{{ range 10 }}{{ end }}{{ end }}", "range is not allowed"},
		{"define", "k", `{{ define "a" }}x{{ end }}`, "define and block"},
		{"template", "k", `{{ template "k" }}`, "template is not allowed"},
		{"block", "k", `{{ block "b" . }}x{{ end }}`, "not allowed"},
		{"index out of range", "k", "{{ index .TenantID 99 }}", "out of range"},
		{"reserved key", "access_token", "x", "reserved"},
		{"invalid key", "a/b", "x", "not a valid Secret data key"},
		{"template too long", "k", long, "longer than"},
		{"key too large", "k", `{{ printf "%0900000d" 1 }}`, "renders to more than"},
		{"doubling strings", "k", `{{ $a := printf "%0500000d" 1 }}{{ $b := print $a $a }}{{ $c := print $b $b }}{{ len $c }}`, "builds more than"},
		{"nested escapers", "k", `{{ len (js (js (js (js (js (js (js (js (printf "%0100000s" "<")))))))))  }}`, "builds more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(map[string]string{tt.key: tt.template}, testValues)
			var terr *Error
			if !errors.As(err, &terr) || terr.Key != tt.key {
				t.Fatalf("Render error = %v, want an *Error for key %q", err, tt.key)
			}
			if got != nil {
				t.Errorf("Render returned %d keys beside its error", len(got))
			}
			if !strings.Contains(err.Error(), tt.inText) {
				t.Errorf("error %q does not mention %q", err, tt.inText)
			}
		})
	}
}

func TestRenderLimitsAllKeysTogether(t *testing.T) {
	templates := map[string]string{}
	for i := range 5 {
		templates["k"+strings.Repeat("x", i)] = `{{ printf "%060000d" 1 }}`
	}
	if _, err := Render(templates, testValues); err == nil || !strings.Contains(err.Error(), "together") {
		t.Fatalf("Render error = %v, want the total limit", err)
	}
	templates = map[string]string{}
	for i := range MaxKeys + 1 {
		templates["k"+strings.Repeat("x", i)] = "x"
	}
	if _, err := Render(templates, testValues); err == nil {
		t.Fatalf("Render of %d keys succeeded", MaxKeys+1)
	}
}

func TestErrorsNeverQuoteTheAccessToken(t *testing.T) {
	// eq of a string and an integer quotes neither, but a comparison of two values
	// of a type text/template cannot compare is where it would slip out.
	for _, tmpl := range []string{
		"{{ .AccessToken.Field }}",
		"{{ eq .AccessToken 1 }}",
		"{{ index .AccessToken 100000 }}",
		"{{ slice .AccessToken 5 1 }}",
		"{{ .AccessToken 1 }}",
	} {
		_, err := Render(map[string]string{"k": tmpl}, testValues)
		if err == nil {
			t.Errorf("%s rendered", tmpl)
			continue
		}
		if strings.Contains(err.Error(), testValues.AccessToken) || strings.Contains(err.Error(), "c2ln") {
			t.Errorf("%s: error %q quotes the token", tmpl, err)
		}
	}
}

func TestSampleValuesRenderAsARealTokenWould(t *testing.T) {
	v := SampleValues(testValues.TenantID, testValues.Resource, time.Date(2026, 11, 21, 12, 59, 59, 0, time.UTC))
	if v.ExpiresAt != testValues.ExpiresAt || v.TokenType != "Bearer" || len(v.AccessToken) < 1000 {
		t.Errorf("SampleValues = %+v", v)
	}
	if _, err := Render(map[string]string{"h": "{{ slice .AccessToken 0 500 }}"}, v); err != nil {
		t.Errorf("a slice a real token allows fails on the sample: %v", err)
	}
}

func TestCheckParsesWithoutRendering(t *testing.T) {
	if err := Check(map[string]string{"k": "{{ index .TenantID 99 }}"}); err != nil {
		t.Errorf("Check = %v: an execution error is not a parse error", err)
	}
	if err := Check(map[string]string{"k": "{{ call .X }}"}); err == nil {
		t.Error("Check accepted call")
	}
}

// FuzzRender: whatever the template and values, Render never panics, returns either
// an error or exactly the template's keys, none of them reserved, within the limits.
func FuzzRender(f *testing.F) {
	f.Add("authorization", "Bearer {{ .AccessToken }}", testValues.AccessToken, testValues.Resource)
	f.Add("config.json", `{"t":{{ printf "%q" .TenantID }},"e":"{{ .ExpiresAt }}"}`, "a.b.c", "")
	f.Add("k", `{{ js .AccessToken | html | urlquery }}{{ len . }}`, "<>&'\"", "x")
	f.Add("k", `{{ with $x := slice .AccessToken 1 }}{{ index $x 0 }}{{ else }}{{ end }}`, "ab", "")
	f.Add("token_type", "{{ .TokenType }}", "", "")
	f.Add("k", `{{ printf "%*d" 999999 1 }}{{ printf "%0999999d" 2 }}`, "", "")
	f.Add("k", `{{ range . }}{{ end }}{{ template "k" }}{{ call .AccessToken }}`, "", "")
	f.Fuzz(func(t *testing.T, key, tmpl, accessToken, resource string) {
		v := testValues
		v.AccessToken, v.Resource = accessToken, resource
		templates := map[string]string{key: tmpl, "fixed": "{{ .TenantID }}"}
		got, err := Render(templates, v)
		if err != nil {
			if got != nil {
				t.Fatalf("Render returned keys beside error %v", err)
			}
			return
		}
		keys := make([]string, 0, len(got))
		total := 0
		for k, value := range got {
			keys = append(keys, k)
			if _, ok := templates[k]; !ok {
				t.Fatalf("rendered key %q is not a template key", k)
			}
			if CheckKey(k) != nil {
				t.Fatalf("rendered key %q is reserved or invalid", k)
			}
			if len(value) > MaxKeyBytes {
				t.Fatalf("key %q rendered to %d bytes", k, len(value))
			}
			total += len(value)
		}
		if len(keys) != len(templates) || total > MaxRenderedBytes {
			t.Fatalf("rendered keys %v (%d bytes) for templates of %d keys", keys, total, len(templates))
		}
		if slices.Contains(keys, "fixed") && string(got["fixed"]) != v.TenantID {
			t.Fatalf("fixed = %q", got["fixed"])
		}
	})
}
