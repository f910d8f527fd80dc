// Package secrettemplate renders the extra data keys of a DefenderTenant's token
// Secret (spec.secretTemplate.data) with Go text/template.
//
// A template sees exactly five strings: .AccessToken, .TokenType, .ExpiresAt,
// .TenantID and .Resource. It can reach nothing outside them: the only functions
// are text/template's builtins, less call (which would run a function value), and
// neither the environment, files nor other Secrets are in scope. The tenant writes
// the templates, the operator runs them, so every construct that could make one
// reconcile spin or exhaust memory is refused or bounded:
//   - range (which iterates up to any integer), template, define and block (which
//     nest templates into exponential output) are refused when parsing;
//   - every string a function builds, and every byte written, counts against a
//     budget per key (MaxWorkBytes, MaxKeyBytes), so string doubling stops early;
//   - the rendered keys together stay under MaxRenderedBytes, well below the
//     1 MiB a Secret may hold.
//
// Admission bounds the inputs (MaxTemplateBytes per template, MaxKeys keys), and
// Render checks them again, so the renderer holds its limits whoever calls it.
package secrettemplate

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

const (
	// MaxKeys is how many data keys a template may have (the CRD's maxProperties).
	MaxKeys = 32
	// MaxTemplateBytes is the longest template of one key (the CRD's limit).
	MaxTemplateBytes = 4096
	// MaxKeyBytes is the most one key may render to.
	MaxKeyBytes = 64 << 10
	// MaxRenderedBytes is the most all keys may render to together, leaving room
	// under the Secret's 1 MiB for the token and metadata.
	MaxRenderedBytes = 256 << 10
	// MaxWorkBytes is the most that the function calls of one key may build, kept
	// or not: what bounds the memory a template like printf "%s%s" $x $x can take.
	MaxWorkBytes = 1 << 20
)

// ReservedKeys are the token Secret's fixed keys, which no template may set.
var ReservedKeys = []string{"access_token", "token_type", "expires_at", "tenant_id"}

// Values is everything a template can read. It has no methods, so a template can
// call none.
type Values struct {
	AccessToken string
	TokenType   string
	// ExpiresAt is RFC 3339, UTC.
	ExpiresAt string
	TenantID  string
	Resource  string
}

// sampleAccessToken has the shape and usual length of an Entra access token, so
// that a template validated against it fails the same way with a real one.
var sampleAccessToken = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("eyJhdWQiOiJodHRwczovL2FwaS5zZWN1cml0eS5taWNyb3NvZnQuY29tIn0", 20) + ".c2lnbmF0dXJl"

// SampleValues are representative values for checking templates before any
// token is minted: the real tenant and resource, a token of realistic length.
func SampleValues(tenantID, resource string, expiresAt time.Time) Values {
	return Values{AccessToken: sampleAccessToken, TokenType: "Bearer", ExpiresAt: expiresAt.UTC().Format(time.RFC3339), TenantID: tenantID, Resource: resource}
}

// Error says which key's template failed, and why. Its text never holds the access
// token.
type Error struct {
	// Key is the data key whose template failed; empty for a limit on all keys.
	Key string
	Err error
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("data key %q: %v", e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// keyPattern is what a Secret data key may be.
var keyPattern = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)

// CheckKey refuses a key that is not a valid Secret data key, or is reserved.
func CheckKey(key string) error {
	switch {
	case len(key) == 0 || len(key) > 253 || !keyPattern.MatchString(key):
		return errors.New("not a valid Secret data key (letters, digits, '-', '_' and '.', at most 253)")
	case slices.Contains(ReservedKeys, key):
		return errors.New("reserved for the operator's own keys")
	}
	return nil
}

// Render renders every template with v. It returns either every key or an error
// and nothing: a Secret is published whole or not at all.
func Render(templates map[string]string, v Values) (map[string][]byte, error) {
	if len(templates) > MaxKeys {
		return nil, &Error{Err: fmt.Errorf("%d data keys, at most %d", len(templates), MaxKeys)}
	}
	keys := make([]string, 0, len(templates))
	for k := range templates {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string][]byte, len(keys))
	total := 0
	for _, key := range keys {
		rendered, err := renderOne(key, templates[key], v)
		if err != nil {
			return nil, &Error{Key: key, Err: redacted(err, v.AccessToken)}
		}
		total += len(rendered)
		if total > MaxRenderedBytes {
			return nil, &Error{Err: fmt.Errorf("the data keys render to more than %d bytes together", MaxRenderedBytes)}
		}
		out[key] = rendered
	}
	return out, nil
}

// Check parses every template, without rendering: what admission cannot see.
func Check(templates map[string]string) error {
	for key, text := range templates {
		if _, err := parseOne(key, text, &budget{}); err != nil {
			return &Error{Key: key, Err: err}
		}
	}
	return nil
}

func renderOne(key, text string, v Values) ([]byte, error) {
	b := &budget{}
	t, err := parseOne(key, text, b)
	if err != nil {
		return nil, err
	}
	w := &cappedBuffer{}
	if err := t.Execute(w, v); err != nil {
		return nil, err
	}
	return w.buf, nil
}

func parseOne(key, text string, b *budget) (*template.Template, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if len(text) > MaxTemplateBytes {
		return nil, fmt.Errorf("template longer than %d bytes", MaxTemplateBytes)
	}
	t, err := template.New(key).Option("missingkey=error").Funcs(b.funcs()).Parse(text)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("define and block are not allowed")
	}
	if t.Tree != nil {
		if err := refuse(t.Root); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// allowedFuncs are the builtins a template may call. call is not among them: it
// runs a function value, and none is in scope, but it is the one door to code.
var allowedFuncs = map[string]bool{
	"and": true, "or": true, "not": true, "len": true, "index": true, "slice": true,
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"print": true, "printf": true, "println": true, "html": true, "js": true, "urlquery": true,
}

// refuse walks the parse tree for what could loop, nest templates or call code.
func refuse(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := refuse(c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		return errors.New("range is not allowed")
	case *parse.TemplateNode:
		return errors.New("template is not allowed")
	case *parse.BreakNode, *parse.ContinueNode:
		return errors.New("break and continue are not allowed")
	case *parse.IfNode:
		return refuseBranch(&n.BranchNode)
	case *parse.WithNode:
		return refuseBranch(&n.BranchNode)
	case *parse.ActionNode:
		return refuse(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := refuse(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if err := refuse(a); err != nil {
				return err
			}
		}
	case *parse.ChainNode:
		return refuse(n.Node)
	case *parse.IdentifierNode:
		if !allowedFuncs[n.Ident] {
			return fmt.Errorf("function %q is not allowed", n.Ident)
		}
	}
	return nil
}

func refuseBranch(b *parse.BranchNode) error {
	for _, n := range []parse.Node{b.Pipe, b.List, b.ElseList} {
		if err := refuse(n); err != nil {
			return err
		}
	}
	return nil
}

// budget counts what the string-building functions of one key's execution build.
type budget struct{ spent int }

var errOverBudget = fmt.Errorf("builds more than %d bytes of strings", MaxWorkBytes)

// spend counts n bytes, and fails once the budget is gone.
func (b *budget) spend(n int) error {
	b.spent += n
	if b.spent > MaxWorkBytes {
		return errOverBudget
	}
	return nil
}

// inputSize is what the string arguments weigh: an escaper's output grows with
// them, so they are checked before it runs.
func inputSize(args []any) int {
	n := 0
	for _, a := range args {
		if s, ok := a.(string); ok {
			n += len(s)
		}
	}
	return n
}

// funcs replaces the builtins that build strings with ones that count what they
// build. Escapers can multiply their input six times, so their input is counted
// first.
func (b *budget) funcs() template.FuncMap {
	built := func(s string) (string, error) {
		if err := b.spend(len(s)); err != nil {
			return "", err
		}
		return s, nil
	}
	escaper := func(escape func(...any) string) func(...any) (string, error) {
		return func(args ...any) (string, error) {
			if err := b.spend(6 * inputSize(args)); err != nil {
				return "", err
			}
			return built(escape(args...))
		}
	}
	return template.FuncMap{
		"print":   func(args ...any) (string, error) { return built(fmt.Sprint(args...)) },
		"println": func(args ...any) (string, error) { return built(fmt.Sprintln(args...)) },
		"printf": func(format string, args ...any) (string, error) {
			// fmt caps a width or precision at a million, so one call builds at most
			// about that beyond its arguments, which the budget already counted.
			return built(fmt.Sprintf(format, args...))
		},
		"html":     escaper(template.HTMLEscaper),
		"js":       escaper(template.JSEscaper),
		"urlquery": escaper(template.URLQueryEscaper),
	}
}

// cappedBuffer holds one key's output and refuses to grow past MaxKeyBytes; the
// refusal ends the execution.
type cappedBuffer struct{ buf []byte }

var errKeyTooLarge = fmt.Errorf("renders to more than %d bytes", MaxKeyBytes)

func (w *cappedBuffer) Write(p []byte) (int, error) {
	if len(w.buf)+len(p) > MaxKeyBytes {
		return 0, errKeyTooLarge
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// redacted keeps the access token out of an error's text, whatever text/template
// quotes: the error ends up in a condition message.
func redacted(err error, accessToken string) error {
	if accessToken == "" || !strings.Contains(err.Error(), accessToken) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), accessToken, "[access token]"))
}
