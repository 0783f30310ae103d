package main

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/spf13/cobra"
)

// schemaID is where the topology file's JSON Schema says it lives.
const schemaID = "https://github.com/warrenmq/warren/docs/topology.schema.json"

func schemaCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of topology files, for editors",
		Long: `schema prints the JSON Schema (draft 2020-12) of the topology file format that
validate, diff and apply read: every key, its type, its values, its default
and the RabbitMQ argument it sets. Editors that read JSON Schema (VS Code
with the YAML extension, IntelliJ) complete and check a topology file with
it:

  # yaml-language-server: $schema=./topology.schema.json

The reference for people is docs/TOPOLOGY.md. Both come from the definitions
the loader itself uses.`,
		Example: `  warren topology schema > topology.schema.json`,
		Args:    args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			return g.printJSON(topologySchema())
		},
	}
}

// formatSection is one section of the file: its key, the entry type, what
// one entry is.
type formatSection struct {
	key, what string
	entry     any
}

var formatSections = []formatSection{
	{"exchanges", "An exchange.", exchangeEntry{}},
	{"queues", "A queue.", queueEntry{}},
	{"bindings", "A binding of a queue (or an exchange) to an exchange.", bindingEntry{}},
}

// formatKey is one key of an entry, as its tags describe it.
type formatKey struct {
	Key, Type, Doc, Arg, Default, Format string
	Enum                                 []string
	Required                             bool
}

// formatKeys are the keys of an entry type, in the order the type declares
// them.
func formatKeys(entry any) []formatKey {
	t := reflect.TypeOf(entry)
	var out []formatKey
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		k := formatKey{Key: name, Doc: f.Tag.Get("doc"), Arg: f.Tag.Get("arg"), Default: f.Tag.Get("def"), Format: f.Tag.Get("format"),
			Required: !strings.Contains(opts, "omitempty")}
		if e := f.Tag.Get("enum"); e != "" {
			k.Enum = strings.Split(e, ",")
		}
		switch f.Type.Kind() {
		case reflect.String:
			k.Type = "string"
		case reflect.Bool:
			k.Type = "boolean"
		case reflect.Int, reflect.Int64:
			k.Type = "integer"
		case reflect.Map:
			k.Type = "object"
		}
		out = append(out, k)
	}
	return out
}

// topologySchema is the JSON Schema of topology files.
func topologySchema() map[string]any {
	props := map[string]any{}
	for _, s := range formatSections {
		entryProps := map[string]any{}
		var required []string
		for _, k := range formatKeys(s.entry) {
			p := map[string]any{"type": k.Type, "description": strings.TrimSpace(k.Doc + " RabbitMQ: " + k.Arg + ".")}
			if len(k.Enum) > 0 {
				p["enum"] = k.Enum
			}
			if k.Format == "duration" {
				p["pattern"] = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
				p["description"] = fmt.Sprint(p["description"], " A duration: 30s, 5m, 24h.")
			}
			if k.Default != "" {
				p["default"] = defaultValue(k)
			}
			entryProps[k.Key] = p
			if k.Required {
				required = append(required, k.Key)
			}
		}
		props[s.key] = map[string]any{
			"type": "array",
			"items": map[string]any{
				"type": "object", "description": s.what, "properties": entryProps,
				"required": required, "additionalProperties": false,
			},
		}
	}
	return map[string]any{
		"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schemaID,
		"title":       "warren topology file",
		"description": "Exchanges, queues and bindings, as `warren topology validate`, `diff` and `apply` read them (docs/TOPOLOGY.md).",
		"type":        "object", "properties": props, "additionalProperties": false,
	}
}

func defaultValue(k formatKey) any {
	switch k.Type {
	case "boolean":
		return k.Default == "true"
	}
	return k.Default
}

// formatReference is docs/TOPOLOGY.md's table of keys, made from the same
// definitions.
func formatReference() string {
	var b strings.Builder
	for _, s := range formatSections {
		fmt.Fprintf(&b, "### `%s`\n\n%s\n\n| key | type | default | RabbitMQ | what it is |\n|---|---|---|---|---|\n", s.key, s.what)
		for _, k := range formatKeys(s.entry) {
			typ := k.Type
			switch {
			case len(k.Enum) > 0:
				typ = "`" + strings.Join(k.Enum, "`, `") + "`"
			case k.Format == "duration":
				typ = "duration (`30s`, `5m`, `24h`)"
			}
			def := k.Default
			switch {
			case k.Required:
				def = "required"
			case def == "":
				def = "-"
			default:
				def = "`" + def + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | `%s` | %s |\n", k.Key, typ, def, k.Arg, k.Doc)
		}
		b.WriteString("\n")
	}
	return b.String()
}
