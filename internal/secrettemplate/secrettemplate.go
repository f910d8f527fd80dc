// Package secrettemplate renders the extra data keys of a DefenderTenant's token
// Secret (spec.secretTemplate.data).
//
// A template is plain interpolation: literal text with references to five values,
// {{ .AccessToken }}, {{ .TokenType }}, {{ .ExpiresAt }}, {{ .TenantID }} and
// {{ .Resource }}, in text/template's syntax ({{- and -}} trim the spaces beside
// them), and nothing else. The tenant writes the templates and the operator renders
// them with the token, so the language has no function, pipeline, variable,
// conditional or comment: with text/template's builtins a template could allocate
// gigabytes in one render (printf with wide verbs) or quote the token into an error
// message, which ends up in the tenant's status.
//
// Parse does all the checking, from the template text alone; Render only
// concatenates, so it cannot fail whatever the values are, and a key renders to at
// most its template's length plus MaxReferences values.
package secrettemplate

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template/parse"
	"unicode/utf8"
)

const (
	// MaxKeys is how many data keys a template may have (the CRD's maxProperties).
	MaxKeys = 32
	// MaxTemplateLength is the longest template of one key, in characters as the
	// CRD's maxLength counts them.
	MaxTemplateLength = 4096
	// MaxReferences is how many values one key may interpolate (the CRD's limit),
	// which bounds what it renders to.
	MaxReferences = 5
)

// ReservedKeys are the token Secret's fixed keys, which no template may set.
var ReservedKeys = []string{"access_token", "token_type", "expires_at", "tenant_id"}

// Values is everything a template can reference.
type Values struct {
	AccessToken string
	TokenType   string
	// ExpiresAt is RFC 3339, UTC.
	ExpiresAt string
	TenantID  string
	Resource  string
}

// field is one of the five values; the zero field is literal text.
type field int

const (
	literal field = iota
	accessToken
	tokenType
	expiresAt
	tenantID
	resource
)

// fields are the names a template may reference, in the order the documentation
// lists them.
var fields = []struct {
	name  string
	field field
}{
	{"AccessToken", accessToken},
	{"TokenType", tokenType},
	{"ExpiresAt", expiresAt},
	{"TenantID", tenantID},
	{"Resource", resource},
}

func fieldNamed(name string) field {
	for _, f := range fields {
		if f.name == name {
			return f.field
		}
	}
	return literal
}

func (v Values) of(f field) string {
	switch f {
	case accessToken:
		return v.AccessToken
	case tokenType:
		return v.TokenType
	case expiresAt:
		return v.ExpiresAt
	case tenantID:
		return v.TenantID
	case resource:
		return v.Resource
	}
	return ""
}

// part is a stretch of literal text or one reference.
type part struct {
	text  string
	field field
}

// Template is a checked spec.secretTemplate.data: each key's template as the
// literal text and references it is made of.
type Template struct {
	keys map[string][]part
}

// Render interpolates v into every key. It cannot fail: everything that could go
// wrong was refused by Parse.
func (t *Template) Render(v Values) map[string][]byte {
	if t == nil {
		return nil
	}
	out := make(map[string][]byte, len(t.keys))
	for key, parts := range t.keys {
		size := 0
		for _, p := range parts {
			size += len(p.text) + len(v.of(p.field))
		}
		rendered := make([]byte, 0, size)
		for _, p := range parts {
			rendered = append(rendered, p.text...)
			rendered = append(rendered, v.of(p.field)...)
		}
		out[key] = rendered
	}
	return out
}

// allowedForm is what every refusal says, so that the fix is in the message.
var allowedForm = func() string {
	refs := make([]string, len(fields))
	for i, f := range fields {
		refs[i] = "{{ ." + f.name + " }}"
	}
	return "a template is literal text with " + strings.Join(refs[:len(refs)-1], ", ") + " and " + refs[len(refs)-1] +
		" references ({{- and -}} trim spaces), at most " + fmt.Sprint(MaxReferences) +
		"; functions, pipelines, variables, conditionals and comments are not allowed"
}()

// Parse checks every key and template, and splits the templates into what Render
// concatenates. Its errors are built from the keys and the templates' text alone.
func Parse[S ~string](data map[string]S) (*Template, error) {
	if len(data) > MaxKeys {
		return nil, fmt.Errorf("%d data keys, at most %d", len(data), MaxKeys)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	// Sorted, so that the same spec always reports the same key.
	sort.Strings(keys)
	t := &Template{keys: make(map[string][]part, len(keys))}
	for _, key := range keys {
		if err := CheckKey(key); err != nil {
			return nil, fmt.Errorf("data key %q: %w", key, err)
		}
		parts, err := parseOne(string(data[key]))
		if err != nil {
			return nil, fmt.Errorf("data key %q: %w", key, err)
		}
		t.keys[key] = parts
	}
	return t, nil
}

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

// treeName names the parse tree, and so prefixes parse's errors.
const treeName = "t"

func parseOne(text string) ([]part, error) {
	if utf8.RuneCountInString(text) > MaxTemplateLength {
		return nil, fmt.Errorf("template longer than %d characters", MaxTemplateLength)
	}
	// Comments are parsed so that they are refused rather than dropped; functions
	// are not looked up, so that a call is refused as a call.
	tree := parse.New(treeName)
	tree.Mode = parse.ParseComments | parse.SkipFuncCheck
	trees := map[string]*parse.Tree{}
	if _, err := tree.Parse(text, "", "", trees); err != nil {
		return nil, fmt.Errorf("does not parse (line %s); %s", strings.TrimPrefix(err.Error(), "template: "+treeName+":"), allowedForm)
	}
	// define and block add trees beside the root, or replace an empty root.
	if len(trees) != 1 || trees[treeName] != tree {
		return nil, fmt.Errorf("found a template definition; %s", allowedForm)
	}
	var parts []part
	references := 0
	for _, node := range tree.Root.Nodes {
		switch node := node.(type) {
		case *parse.TextNode:
			parts = append(parts, part{text: string(node.Text)})
			continue
		case *parse.ActionNode:
			if f, ok := reference(text, node); ok {
				references++
				if references > MaxReferences {
					return nil, fmt.Errorf("more than %d references at %s; %s", MaxReferences, position(text, node), allowedForm)
				}
				parts = append(parts, part{field: f})
				continue
			}
		}
		return nil, fmt.Errorf("found %s at %s; %s", describe(node), position(text, node), allowedForm)
	}
	return parts, nil
}

// reference is the field an action interpolates, if it is nothing but one of the five.
func reference(text string, action *parse.ActionNode) (field, bool) {
	pipe := action.Pipe
	if len(pipe.Decl) != 0 || len(pipe.Cmds) != 1 || len(pipe.Cmds[0].Args) != 1 {
		return literal, false
	}
	f, ok := pipe.Cmds[0].Args[0].(*parse.FieldNode)
	if !ok || len(f.Ident) != 1 {
		return literal, false
	}
	named := fieldNamed(f.Ident[0])
	return named, named != literal && closesAfter(text, f)
}

// closesAfter: the action ends right after the field, but for spaces and a trim
// marker. text/template also takes a pipe to nothing ({{ .Resource | }}), which the
// tree does not show and the CRD refuses.
func closesAfter(text string, f *parse.FieldNode) bool {
	after := text[int(f.Position())+len(f.String()):]
	rest := strings.TrimLeft(after, " \t\r\n")
	return strings.HasPrefix(rest, "}}") || (strings.HasPrefix(rest, "-}}") && len(rest) < len(after))
}

// describe names what a node is, for a refusal; what it quotes comes from the
// template's text.
func describe(node parse.Node) string {
	switch node := node.(type) {
	case *parse.ActionNode:
		pipe := node.Pipe
		switch {
		case len(pipe.Decl) != 0 || pipe.IsAssign:
			return "a variable"
		case len(pipe.Cmds) > 1:
			return "a pipeline"
		case len(pipe.Cmds) == 1 && len(pipe.Cmds[0].Args) > 0:
			return describeOperand(pipe.Cmds[0].Args[0], len(pipe.Cmds[0].Args) > 1)
		}
	case *parse.IfNode:
		return "a conditional (if)"
	case *parse.WithNode:
		return "a conditional (with)"
	case *parse.RangeNode:
		return "a loop (range)"
	case *parse.TemplateNode:
		return "a template call"
	case *parse.CommentNode:
		return "a comment"
	case *parse.BreakNode, *parse.ContinueNode:
		return "a loop control (break, continue)"
	}
	return "an action other than a reference"
}

func describeOperand(operand parse.Node, withArguments bool) string {
	switch operand := operand.(type) {
	case *parse.IdentifierNode:
		return fmt.Sprintf("a function call (%s)", shortened(operand.Ident))
	case *parse.FieldNode:
		switch {
		case len(operand.Ident) > 1:
			return fmt.Sprintf("a field of a field (%s)", shortened(operand.String()))
		case withArguments:
			return "a reference with arguments"
		case fieldNamed(operand.Ident[0]) != literal:
			return "a pipeline (a trailing |)"
		}
		return fmt.Sprintf("an unknown field (%s)", shortened(operand.String()))
	case *parse.VariableNode:
		return "a variable"
	case *parse.DotNode:
		return "dot alone ({{ . }})"
	case *parse.PipeNode:
		return "a parenthesized pipeline"
	case *parse.ChainNode:
		return "a field of an expression"
	case *parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode:
		return "a constant"
	}
	return "an action other than a reference"
}

// shortened keeps a name from the template short enough for a condition message.
func shortened(s string) string {
	const most = 40
	if len(s) <= most {
		return s
	}
	return strings.ToValidUTF8(s[:most], "") + "…"
}

// position is where node starts in text, as line and column (in bytes, from 1).
func position(text string, node parse.Node) string {
	offset := min(max(int(node.Position()), 0), len(text))
	before := text[:offset]
	line := strings.Count(before, "\n") + 1
	column := offset - strings.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, column)
}
