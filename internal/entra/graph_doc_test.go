package entra

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMigrationGuideListsTheRoleMap: docs/migrating-to-graph.md's role map is
// GraphRoleFor, row for row, each row cites a Microsoft Learn page, and no role the
// guide lists as having no Graph equivalent is mapped.
func TestMigrationGuideListsTheRoleMap(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "migrating-to-graph.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	roleMap, unmapped, ok := strings.Cut(text, "### Roles without a Graph equivalent")
	if !ok {
		t.Fatal("docs/migrating-to-graph.md has no section \"Roles without a Graph equivalent\"")
	}
	_, roleMap, ok = strings.Cut(roleMap, "## Role map")
	if !ok {
		t.Fatal("docs/migrating-to-graph.md has no section \"Role map\"")
	}
	row := regexp.MustCompile("(?m)^\\| `([\\w.]+)` \\| `([\\w.]+)` \\| (.*) \\|$")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(roleMap, -1) {
		if _, twice := documented[m[1]]; twice {
			t.Errorf("the role map lists %s twice", m[1])
		}
		documented[m[1]] = m[2]
		if strings.Count(m[3], "](https://learn.microsoft.com/") < 2 {
			t.Errorf("the row of %s does not cite a Learn page for each side: %s", m[1], m[3])
		}
	}
	if !maps.Equal(documented, GraphRoleFor) {
		t.Errorf("docs/migrating-to-graph.md maps\n  %v\nentra.GraphRoleFor maps\n  %v", documented, GraphRoleFor)
	}

	unmappedRow := regexp.MustCompile("(?m)^\\| `([\\w.]+)` \\|")
	rows := unmappedRow.FindAllStringSubmatch(unmapped, -1)
	if len(rows) == 0 {
		t.Fatal("the guide names no role without a Graph equivalent")
	}
	for _, m := range rows {
		if g, mapped := GraphRoleFor[m[1]]; mapped {
			t.Errorf("the guide says %s has no Graph equivalent, GraphRoleFor maps it to %s", m[1], g)
		}
		if mapped, rest := GraphRoles([]string{m[1]}); len(mapped) != 0 || len(rest) != 1 {
			t.Errorf("GraphRoles(%s) = %v, %v; want it listed as unmapped", m[1], mapped, rest)
		}
	}
}
