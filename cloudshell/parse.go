package cloudshell

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Node is a parsed XML element. Names are local names: namespaces are dropped because
// CloudShell's lookups are un-namespaced (the reference client deletes the default
// namespace before parsing). All methods are safe on a nil *Node and then return zero
// values, so lookups can be chained without checks.
type Node struct {
	Name  string
	Attrs map[string]string
	// Text is the element's own character data (not its descendants'), untrimmed.
	Text     string
	Children []*Node
}

// Field returns a scalar the way the reference client reads one: the attribute of that
// name if present (even when empty), else the text of the first child element of that
// name, else "". The server uses both forms for the same kind of field.
func (n *Node) Field(name string) string {
	if n == nil {
		return ""
	}
	if v, ok := n.Attrs[name]; ok {
		return v
	}
	if c := n.Child(name); c != nil {
		return c.Text
	}
	return ""
}

// Child returns the first child element with that local name, or nil.
func (n *Node) Child(name string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// List returns the items of a list field: every element child of the wrapper named name,
// whatever the items' tags. When the wrapper has no element children, the repeated
// children of n named name are the items instead (<Items>1</Items><Items>2</Items>);
// empty ones are skipped so that an empty wrapper (<Services/>) is an empty list.
func (n *Node) List(name string) []*Node {
	w := n.Child(name)
	if w == nil {
		return nil
	}
	if len(w.Children) > 0 {
		return w.Children
	}
	var items []*Node
	for _, c := range n.Children {
		if c.Name == name && !c.empty() {
			items = append(items, c)
		}
	}
	return items
}

func (n *Node) empty() bool {
	return len(n.Attrs) == 0 && len(n.Children) == 0 && strings.TrimSpace(n.Text) == ""
}

// parseBool is the reference client's rule for typed bool fields.
func parseBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// parseSuccess is narrower than parseBool on purpose: the reference does not accept "1"
// for the envelope's Success attribute.
func parseSuccess(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true
	}
	return false
}

// parseInt falls back to 0 like the reference client does on unparsable numbers.
func parseInt(s string) int {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0
	}
	return v
}

// errEnvelope explains why a 2xx body is unusable; the caller wraps it in ErrBadResponse
// together with the method and HTTP status.
type errEnvelope struct{ reason string }

func (e *errEnvelope) Error() string { return e.reason }

// parseEnvelope decodes a CloudShell Response document. It returns the ResponseInfo element
// (nil when absent) on success, an *APIError on a failure envelope and an *errEnvelope
// when the body is not a usable envelope.
func parseEnvelope(method string, body []byte) (*Node, error) {
	root, err := decodeTree(body)
	if err != nil {
		return nil, err
	}
	if root.Name != "Response" {
		return nil, &errEnvelope{reason: "root element is <" + root.Name + ">, not <Response>"}
	}
	if !parseSuccess(root.Field("Success")) {
		return nil, &APIError{
			Method:  method,
			Code:    parseInt(root.Field("ErrorCode")),
			Message: strings.TrimSpace(root.Field("Error")),
		}
	}
	return root.Child("ResponseInfo"), nil
}

// decodeTree builds a Node tree of the first root element. It never panics; anything the
// XML decoder rejects after sanitising comes back as an *errEnvelope.
func decodeTree(body []byte) (*Node, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &errEnvelope{reason: "empty body"}
	}
	body = sanitize(body)
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	d.Entity = xml.HTMLEntity
	// Servers and fixtures declare encodings that do not match the bytes (utf-16 on plain
	// text); sanitize already made the bytes UTF-8, so the declaration is ignored.
	d.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }

	type frame struct {
		n    *Node
		text []byte
	}
	var (
		root  *Node
		stack []frame
	)
	for {
		tok, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if root == nil {
					return nil, &errEnvelope{reason: "no XML element in body"}
				}
				return nil, &errEnvelope{reason: "truncated XML: <" + stack[len(stack)-1].n.Name + "> not closed"}
			}
			return nil, &errEnvelope{reason: "malformed XML: " + err.Error()}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &Node{Name: t.Name.Local}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				if n.Attrs == nil {
					n.Attrs = make(map[string]string, len(t.Attr))
				}
				// Unprefixed attributes win over prefixed ones with the same local name.
				if _, dup := n.Attrs[a.Name.Local]; dup && a.Name.Space != "" {
					continue
				}
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1].n
				p.Children = append(p.Children, n)
			}
			stack = append(stack, frame{n: n})
		case xml.EndElement:
			top := len(stack) - 1
			stack[top].n.Text = string(stack[top].text)
			stack = stack[:top]
			if len(stack) == 0 {
				// Anything after the root element is ignored, like trailing junk after a
				// complete envelope.
				return root, nil
			}
		case xml.CharData:
			if len(stack) > 0 {
				f := &stack[len(stack)-1]
				f.text = append(f.text, t...)
			}
		}
	}
}

// sanitize makes a body acceptable to encoding/xml without changing well-formed input:
// it decodes UTF-16 (by BOM), drops a UTF-8 BOM, repairs invalid UTF-8 (as Latin-1 when
// declared so, else with U+FFFD), and replaces character references and raw characters that
// XML 1.0 forbids, notably the NUL reference (&#x0;) CloudShell emits, with U+FFFD. The
// reference client rewrites &#x0; into markup; a replacement character keeps it text.
func sanitize(b []byte) []byte {
	switch {
	case len(b) >= 2 && ((b[0] == 0xFF && b[1] == 0xFE) || (b[0] == 0xFE && b[1] == 0xFF)):
		b = decodeUTF16(b)
	case bytes.HasPrefix(b, []byte("\xEF\xBB\xBF")):
		b = b[3:]
	}
	if !utf8.Valid(b) {
		if declaresLatin1(b) {
			b = latin1ToUTF8(b)
		} else {
			b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
		}
	}
	if !needsCharFix(b) {
		return b
	}
	return fixChars(b)
}

func decodeUTF16(b []byte) []byte {
	big := b[0] == 0xFE
	b = b[2:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		if big {
			u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
		} else {
			u = append(u, uint16(b[i+1])<<8|uint16(b[i]))
		}
	}
	return []byte(string(utf16.Decode(u)))
}

func declaresLatin1(b []byte) bool {
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("<?xml")) {
		return false
	}
	end := bytes.Index(b, []byte("?>"))
	if end < 0 {
		return false
	}
	decl := strings.ToLower(string(b[:end]))
	for _, enc := range []string{"iso-8859-1", "latin1", "latin-1", "iso8859-1", "windows-1252", "cp1252", "us-ascii"} {
		if strings.Contains(decl, enc) {
			return true
		}
	}
	return false
}

func latin1ToUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/4)
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}

func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

func needsCharFix(b []byte) bool {
	if bytes.Contains(b, []byte("&#")) {
		return true
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return true
		}
		// U+FFFE and U+FFFF are EF BF BE / EF BF BF.
		if c == 0xEF && i+2 < len(b) && b[i+1] == 0xBF && (b[i+2] == 0xBE || b[i+2] == 0xBF) {
			return true
		}
	}
	return false
}

const replacementRef = "&#xFFFD;"

func fixChars(b []byte) []byte {
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		if b[i] == '&' && i+1 < len(b) && b[i+1] == '#' {
			if n, ok := charRefLen(b[i:]); ok {
				if r, valid := charRefValue(b[i+2 : i+n-1]); !valid || !isXMLChar(r) {
					out = append(out, replacementRef...)
				} else {
					out = append(out, b[i:i+n]...)
				}
				i += n
				continue
			}
			out = append(out, b[i])
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if !isXMLChar(r) {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// charRefLen returns the length of "&#...;" at the start of b when it has the shape of a
// character reference (a short run of alphanumerics before ';').
func charRefLen(b []byte) (int, bool) {
	for j := 2; j < len(b) && j < 16; j++ {
		c := b[j]
		if c == ';' {
			return j + 1, j > 2
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return 0, false
		}
	}
	return 0, false
}

func charRefValue(s []byte) (rune, bool) {
	var (
		v   uint64
		err error
	)
	if len(s) > 0 && s[0] == 'x' {
		v, err = strconv.ParseUint(string(s[1:]), 16, 32)
	} else {
		v, err = strconv.ParseUint(string(s), 10, 32)
	}
	if err != nil || v > utf8.MaxRune {
		return 0, false
	}
	return rune(v), true
}
