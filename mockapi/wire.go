package mockapi

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	apiPrefix = "/ResourceManagerApiService/"
	resultNS  = "http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd"

	// Bodies of the calls the SDK makes are a few hundred bytes; the cap only keeps a
	// misbehaving client from making the mock buffer unbounded input.
	maxBodyBytes = 4 << 20
	// Real requests nest at most three levels (method, list wrapper, item, field).
	maxDepth = 32
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// node is an element of a request body. Requests are tiny and schema-less from the
// server's point of view (parameters by name, list items of any tag), so a generic tree
// is simpler and more tolerant than struct unmarshalling.
type node struct {
	name string
	text []byte
	kids []*node
}

func (n *node) child(name string) *node {
	for _, k := range n.kids {
		if k.name == name {
			return k
		}
	}
	return nil
}

// request is a parsed API call: the root element (named after the method) and its
// parameter children.
type request struct {
	method string
	root   *node
}

// parseRequest parses a request body the way a tolerant SOAP-less .NET endpoint would:
// local names only, parameters by name in any order, unknown elements ignored.
func parseRequest(method string, body []byte) (*request, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	d := xml.NewDecoder(bytes.NewReader(body))
	d.CharsetReader = asciiCharsetReader
	var root *node
	var stack []*node
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed request XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 && root != nil {
				return nil, errors.New("malformed request XML: more than one root element")
			}
			if len(stack) >= maxDepth {
				return nil, errors.New("malformed request XML: elements nested too deeply")
			}
			n := &node{name: t.Name.Local}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, errors.New("malformed request XML: text outside the root element")
				}
				continue
			}
			top := stack[len(stack)-1]
			top.text = append(top.text, t...)
		}
	}
	if root == nil {
		return nil, errors.New("malformed request XML: empty body")
	}
	if root.name != method {
		return nil, fmt.Errorf("request root element <%s> does not match method %s", root.name, method)
	}
	return &request{method: method, root: root}, nil
}

// asciiCharsetReader accepts the declarations a client may plausibly put on an ASCII or
// UTF-8 body; anything else is refused rather than silently misread.
func asciiCharsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "us-ascii", "ascii", "utf8", "utf-8":
		return input, nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", charset)
}

func (r *request) param(name string) *node { return r.root.child(name) }

// str returns the parameter text, or def when the element is absent. An empty element is
// an empty string, as the reference client sends for "".
func (r *request) str(name, def string) string {
	n := r.param(name)
	if n == nil {
		return def
	}
	return string(n.text)
}

// boolean treats an absent or empty element as the default: the reference client sends
// every parameter, but older clients omit newer ones.
func (r *request) boolean(name string, def bool) (bool, error) {
	n := r.param(name)
	if n == nil {
		return def, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(n.text))) {
	case "":
		return def, nil
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("parameter '%s' has an invalid boolean value '%s'", name, n.text)
}

func (r *request) integer(name string, def int) (int, error) {
	n := r.param(name)
	if n == nil {
		return def, nil
	}
	s := strings.TrimSpace(string(n.text))
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("parameter '%s' has an invalid integer value '%s'", name, s)
	}
	return v, nil
}

// list returns the items of a list parameter: every child element of the wrapper,
// whatever its tag (.NET reads <string>, but the tag is not what carries meaning).
// Text directly inside the wrapper means the client did not serialise a list at all;
// that is refused so such a client bug shows up in tests instead of reading as "empty".
func (r *request) list(name string) ([]*node, error) {
	n := r.param(name)
	if n == nil {
		return nil, nil
	}
	if len(n.kids) == 0 && len(bytes.TrimSpace(n.text)) != 0 {
		return nil, fmt.Errorf("parameter '%s' must be a list of elements, got text", name)
	}
	return n.kids, nil
}

func (r *request) strings(name string) ([]string, error) {
	items, err := r.list(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, string(it.text))
	}
	return out, nil
}

// objects returns each list item's fields by element name. The reference client sorts
// fields alphabetically and documentation shows declared order, so order is ignored.
func (r *request) objects(name string) ([]map[string]string, error) {
	items, err := r.list(name)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]string, 0, len(items))
	for _, it := range items {
		m := make(map[string]string, len(it.kids))
		for _, f := range it.kids {
			if _, dup := m[f.name]; !dup {
				m[f.name] = string(f.text)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// xw writes indented XML the way the .NET server does (CRLF, two spaces), so clients are
// exercised against inter-element whitespace.
type xw struct {
	b     bytes.Buffer
	depth int
}

func (w *xw) newline() {
	if w.b.Len() == 0 && w.depth == 0 {
		return
	}
	w.b.WriteString("\r\n")
	for i := 0; i < w.depth; i++ {
		w.b.WriteString("  ")
	}
}

// escape writes s the way .NET's XmlWriter does: & < > always, '"' and tab/newline as
// character references in attribute values (so they survive attribute normalisation), and
// characters XML 1.0 cannot carry replaced by U+FFFD rather than emitted raw.
func (w *xw) escape(s string, attr bool) {
	last := 0
	for i, r := range s {
		var esc string
		switch {
		case r == '&':
			esc = "&amp;"
		case r == '<':
			esc = "&lt;"
		case r == '>':
			esc = "&gt;"
		case r == '\r':
			esc = "&#xD;"
		case attr && r == '"':
			esc = "&quot;"
		case attr && r == '\n':
			esc = "&#xA;"
		case attr && r == '\t':
			esc = "&#x9;"
		case !xmlChar(r) || (r == utf8.RuneError && isInvalidUTF8(s[i:])):
			esc = "\uFFFD"
		default:
			continue
		}
		w.b.WriteString(s[last:i])
		w.b.WriteString(esc)
		_, size := utf8.DecodeRuneInString(s[i:])
		last = i + size
	}
	w.b.WriteString(s[last:])
}

func isInvalidUTF8(s string) bool {
	_, size := utf8.DecodeRuneInString(s)
	return size == 1
}

// xmlChar is the Char production of XML 1.0.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

func (w *xw) tag(name string, attrs []string) {
	w.newline()
	w.b.WriteByte('<')
	w.b.WriteString(name)
	for i := 0; i+1 < len(attrs); i += 2 {
		w.b.WriteByte(' ')
		w.b.WriteString(attrs[i])
		w.b.WriteString(`="`)
		w.escape(attrs[i+1], true)
		w.b.WriteByte('"')
	}
}

// open starts an element that will have children; attrs are name/value pairs.
func (w *xw) open(name string, attrs ...string) {
	w.tag(name, attrs)
	w.b.WriteByte('>')
	w.depth++
}

func (w *xw) close(name string) {
	w.depth--
	w.newline()
	w.b.WriteString("</")
	w.b.WriteString(name)
	w.b.WriteByte('>')
}

// leaf writes an element without content.
func (w *xw) leaf(name string, attrs ...string) {
	w.tag(name, attrs)
	w.b.WriteString(" />")
}

// text writes an element holding only text.
func (w *xw) text(name, text string) {
	w.tag(name, nil)
	w.b.WriteByte('>')
	w.escape(text, false)
	w.b.WriteString("</")
	w.b.WriteString(name)
	w.b.WriteByte('>')
}

// raw appends pre-rendered markup (a cached payload) at the current position.
func (w *xw) raw(b []byte) { w.b.Write(b) }

// result is a success payload. typ is the xsi:type of ResponseInfo ("" = bare
// <ResponseInfo />); attrs go on ResponseInfo itself (ServerTimeInfo needs that); body is
// markup rendered at depth 2 (inside Response/ResponseInfo).
type result struct {
	typ   string
	attrs []string
	body  []byte
}

// apiError is a Success="false" answer. CloudShell uses 100 for nearly everything, so
// clients must classify by message; the mock does the same.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("error %d: %s", e.code, e.msg) }

func failf(format string, args ...any) *apiError {
	return &apiError{code: 100, msg: fmt.Sprintf(format, args...)}
}

const envelopeHeader = `<?xml version="1.0" encoding="utf-8"?>`

func envelopeStart(w *xw, method string, success bool) {
	w.b.WriteString(envelopeHeader)
	ok := "false"
	if success {
		ok = "true"
	}
	w.open("Response", "CommandName", method, "Success", ok,
		"xmlns", resultNS,
		"xmlns:xsd", "http://www.w3.org/2001/XMLSchema",
		"xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance")
}

// renderSuccess builds the whole success envelope.
func renderSuccess(method string, res *result) []byte {
	var w xw
	envelopeStart(&w, method, true)
	w.text("ErrorCode", "0")
	switch {
	case res == nil || res.typ == "":
		w.leaf("ResponseInfo")
	case len(res.body) == 0:
		w.leaf("ResponseInfo", append([]string{"xsi:type", res.typ}, res.attrs...)...)
	default:
		w.open("ResponseInfo", append([]string{"xsi:type", res.typ}, res.attrs...)...)
		w.raw(res.body)
		w.close("ResponseInfo")
	}
	w.close("Response")
	return w.b.Bytes()
}

// renderFailure builds a Success="false" envelope: Error before ErrorCode, as in the
// schema's sequence, and no ResponseInfo.
func renderFailure(method string, e *apiError) []byte {
	var w xw
	envelopeStart(&w, method, false)
	w.text("Error", e.msg)
	w.text("ErrorCode", strconv.Itoa(e.code))
	w.close("Response")
	return w.b.Bytes()
}

// payload returns a writer for ResponseInfo content, indented to splice into the envelope.
func payload() *xw { return &xw{depth: 2} }

// authHeader is the parsed Authorization header: "MachineName=host:port;Token=tok".
// Token values are base64 and may contain '=', so each pair splits at its first '='.
type authHeader struct {
	machine string
	token   string
}

func parseAuthorization(h string) authHeader {
	var a authHeader
	for _, part := range strings.Split(h, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "machinename":
			a.machine = v
		case "token":
			a.token = v
		}
	}
	return a
}

// client is the machine name without the ":port" the reference client appends.
func (a authHeader) client() string {
	if i := strings.LastIndexByte(a.machine, ':'); i >= 0 {
		if _, err := strconv.Atoi(a.machine[i+1:]); err == nil {
			return a.machine[:i]
		}
	}
	return a.machine
}
