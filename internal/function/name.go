package function

import (
	"regexp"
	"strings"
)

// namePattern is the rule a function name follows: it becomes part of a URL
// (/invoke/<name>), a VM name and file names on the host.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// IsCandidate reports whether an entry of the functions directory called
// name may be a function at all. Hidden names (starting with '.') are not:
// they belong to editors, version control and the like, and are ignored
// without a status. Every other name is a candidate; ValidateName then says
// whether it is a valid one.
func IsCandidate(name string) bool {
	return name != "" && !strings.HasPrefix(name, ".")
}

// ValidateName reports why name cannot name a function, or nil.
func ValidateName(name string) error {
	if namePattern.MatchString(name) {
		return nil
	}
	return invalidf("name %q is not a valid function name: use 1 to 63 characters, "+
		"lowercase letters a-z, digits 0-9 and '-', starting with a letter or digit "+
		"(it becomes part of the URL /invoke/<name>)", name)
}
