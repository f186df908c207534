package redact

// Byte classes used by the rules. Tables, not comparisons: they are read in
// the inner loops.
var (
	alnum        = class("", "AZ", "az", "09")
	bearerSet    = class("-._~+/", "AZ", "az", "09")
	b64Set       = class("+/", "AZ", "az", "09")
	b64urlSet    = class("_-", "AZ", "az", "09")
	awsSecretSet = class("/+=", "AZ", "az", "09")
	awsIDSet     = class("", "AZ", "09")
	upperSpace   = class(" ", "AZ")
	wsSet        = class(" \t\r\n")
	// A form value runs to '&', whitespace, a quote, ';' or the end.
	formValSet = not(class("& \t\r\n\v\f\"';"))
	// A form name starts the input or follows one of these: the spec's
	// separators, plus '#' (OAuth fragments) and quotes (a form or query
	// string inside a JSON or HTML attribute string).
	formBoundary = class("&?;#\"' \t\r\n\v\f")
	// A header value runs to the end of its line.
	headerValSet = not(class("\r\n"))
	// A bare JSON value (number, true, false, null, or anything invalid
	// standing where a value should be) runs to a delimiter.
	bareSet = not(class(" \t\r\n,}]\"\\{["))
	// tchar (RFC 9110) for header names.
	tchar = class("!#$%&'*+-.^_`|~", "AZ", "az", "09")
	// Bytes a field name may hold and still be found (as a JSON key, if
	// not as a form name): no quote, backslash or control character.
	fieldNameSet = not(class("\"\\"))
)

func init() {
	for c := 0; c < ' '; c++ {
		fieldNameSet[c] = false
	}
	fieldNameSet[0x7f] = false
}

func class(chars string, ranges ...string) *[256]bool {
	var s [256]bool
	for i := 0; i < len(chars); i++ {
		s[chars[i]] = true
	}
	for _, r := range ranges {
		for c := int(r[0]); c <= int(r[1]); c++ {
			s[c] = true
		}
	}
	return &s
}

func not(s *[256]bool) *[256]bool {
	for i := range s {
		s[i] = !s[i]
	}
	return s
}
