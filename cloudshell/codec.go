package cloudshell

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Param is one request parameter for [Client.Call]. Parameters go on the wire in the order
// given, which must be the method's declared order.
//
// Value may be a string, bool, int, int64, float64, []string, []AttributeNameValue,
// []SandboxDataKeyValue, []SetConnectorRequest, or nil (an empty element). Any other type
// is rejected with an [*ArgumentError] before anything is sent.
type Param struct {
	Name  string
	Value any
}

// encodeRequest renders a request body exactly as the reference client's ElementTree code
// does. It is hand-written because encoding/xml escapes quotes, writes "<x></x>" for empty
// elements and emits raw UTF-8, all of which differ from the reference bytes.
func encodeRequest(method string, params []Param) (string, error) {
	if !validXMLName(method) {
		return "", &ArgumentError{Method: method, Field: "method", Reason: "is not a valid method name"}
	}
	if len(params) == 0 {
		return "<" + method + " />", nil
	}
	var b strings.Builder
	b.Grow(estimateSize(method, params))
	b.WriteByte('<')
	b.WriteString(method)
	b.WriteByte('>')
	for i, p := range params {
		if !validXMLName(p.Name) {
			return "", &ArgumentError{Method: method, Field: fmt.Sprintf("params[%d].Name", i), Reason: "is not a valid XML element name"}
		}
		if err := encodeParam(&b, method, p); err != nil {
			return "", err
		}
	}
	b.WriteString("</")
	b.WriteString(method)
	b.WriteByte('>')
	return b.String(), nil
}

func encodeParam(b *strings.Builder, method string, p Param) error {
	switch v := p.Value.(type) {
	case nil:
		writeEmpty(b, p.Name)
	case string:
		writeText(b, p.Name, v)
	case bool:
		writeRaw(b, p.Name, strconv.FormatBool(v))
	case int:
		writeRaw(b, p.Name, strconv.Itoa(v))
	case int64:
		writeRaw(b, p.Name, strconv.FormatInt(v, 10))
	case float64:
		writeRaw(b, p.Name, pythonFloat(v))
	case []string:
		writeList(b, p.Name, v, func(s string) { writeText(b, "string", s) })
	case []AttributeNameValue:
		writeList(b, p.Name, v, func(a AttributeNameValue) {
			writeObject(b, "AttributeNameValue", "Name", a.Name, "Value", a.Value)
		})
	case []SandboxDataKeyValue:
		writeList(b, p.Name, v, func(kv SandboxDataKeyValue) {
			writeObject(b, "SandboxDataKeyValue", "Key", kv.Key, "Value", kv.Value)
		})
	case []SetConnectorRequest:
		writeList(b, p.Name, v, func(c SetConnectorRequest) {
			writeObject(b, "SetConnectorRequest", "Alias", c.Alias, "Direction", c.Direction,
				"SourceResourceFullName", c.SourceResourceFullName, "TargetResourceFullName", c.TargetResourceFullName)
		})
	default:
		return &ArgumentError{Method: method, Field: p.Name, Reason: fmt.Sprintf("has unsupported type %T", p.Value)}
	}
	return nil
}

// writeList writes a list parameter the .NET way: a wrapper named after the parameter around
// one element per item; an empty list is an empty wrapper ("<attributes />").
func writeList[T any](b *strings.Builder, name string, items []T, item func(T)) {
	if len(items) == 0 {
		writeEmpty(b, name)
		return
	}
	openTag(b, name)
	for _, it := range items {
		item(it)
	}
	closeTag(b, name)
}

// writeObject writes a request object named after its class, with its fields as child
// elements. Callers pass the fields in alphabetical order: the reference client sorts them.
func writeObject(b *strings.Builder, class string, fieldValues ...string) {
	openTag(b, class)
	for i := 0; i+1 < len(fieldValues); i += 2 {
		writeText(b, fieldValues[i], fieldValues[i+1])
	}
	closeTag(b, class)
}

func openTag(b *strings.Builder, name string) {
	b.WriteByte('<')
	b.WriteString(name)
	b.WriteByte('>')
}

func closeTag(b *strings.Builder, name string) {
	b.WriteString("</")
	b.WriteString(name)
	b.WriteByte('>')
}

// writeEmpty uses ElementTree's short form, space included.
func writeEmpty(b *strings.Builder, name string) {
	b.WriteByte('<')
	b.WriteString(name)
	b.WriteString(" />")
}

func writeRaw(b *strings.Builder, name, text string) {
	openTag(b, name)
	b.WriteString(text)
	closeTag(b, name)
}

func writeText(b *strings.Builder, name, text string) {
	if text == "" {
		writeEmpty(b, name)
		return
	}
	openTag(b, name)
	escapeText(b, text)
	closeTag(b, name)
}

// escapeText mirrors ElementTree: only & < > are escaped in text (quotes stay), and the
// US-ASCII output encoding turns every other non-ASCII rune into a decimal character
// reference. Control characters pass through unfiltered, as in the reference.
func escapeText(b *strings.Builder, s string) {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			var rep string
			switch c {
			case '&':
				rep = "&amp;"
			case '<':
				rep = "&lt;"
			case '>':
				rep = "&gt;"
			default:
				i++
				continue
			}
			b.WriteString(s[start:i])
			b.WriteString(rep)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteString(s[start:i])
		b.WriteString("&#")
		b.WriteString(strconv.Itoa(int(r)))
		b.WriteByte(';')
		i += size
		start = i
	}
	b.WriteString(s[start:])
}

// pythonFloat formats like Python's str(float): shortest round-trip digits, ".0" on
// integral values, exponent form outside [1e-4, 1e16).
func pythonFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	if a := math.Abs(f); a != 0 && (a < 1e-4 || a >= 1e16) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsRune(s, '.') {
		s += ".0"
	}
	return s
}

// validXMLName accepts the names CloudShell uses (method names, lowerCamelCase parameters).
// It is deliberately narrower than the XML Name production: a method name is also a URL
// path segment, so anything exotic is refused rather than escaped.
func validXMLName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case (c >= '0' && c <= '9') || c == '-' || c == '.':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func estimateSize(method string, params []Param) int {
	n := 2*len(method) + 5
	for _, p := range params {
		n += 2*len(p.Name) + 5
		switch v := p.Value.(type) {
		case string:
			n += len(v)
		case []string:
			for _, s := range v {
				n += len(s) + 17
			}
		case []AttributeNameValue:
			for _, a := range v {
				n += len(a.Name) + len(a.Value) + 64
			}
		case []SandboxDataKeyValue:
			for _, a := range v {
				n += len(a.Key) + len(a.Value) + 70
			}
		case []SetConnectorRequest:
			for _, c := range v {
				n += len(c.Alias) + len(c.Direction) + len(c.SourceResourceFullName) + len(c.TargetResourceFullName) + 160
			}
		default:
			n += 8
		}
	}
	return n
}
