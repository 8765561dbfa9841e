package cli

import "strings"

// parseArgs splits args into flags and positional arguments. values maps
// the names of flags that take a value ("--user") to where it is stored;
// both "--user ID" and "--user=ID" are accepted, and a flag given twice is
// an error. bools maps flags without a value. A lone "--" ends the flags.
// It returns the positional arguments, or a message for the usage line.
func parseArgs(args []string, values map[string]*string, bools map[string]*bool) ([]string, string) {
	var pos []string
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), ""
		}
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		if b, ok := bools[name]; ok && !hasVal {
			if seen[name] {
				return nil, name + " given twice"
			}
			seen[name] = true
			*b = true
			continue
		}
		dst, ok := values[name]
		if !ok {
			return nil, "unknown argument " + a
		}
		if seen[name] {
			return nil, name + " given twice"
		}
		seen[name] = true
		if !hasVal {
			if i+1 >= len(args) {
				return nil, name + " needs a value"
			}
			i++
			val = args[i]
		}
		if val == "" {
			return nil, name + " must not be empty"
		}
		*dst = val
	}
	return pos, ""
}
