package dorisemu

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// flatJSONRow is a fast path of readJSONLine for the common line shape: one
// JSON object whose values are all scalars (strings without escapes,
// numbers, true, false, null). It yields exactly what decodeJSON and
// jsonRow would (strings as string, numbers as json.Number, the last of
// duplicate keys) without building a map. For anything else — escapes,
// nesting, arrays, invalid UTF-8 or JSON, trailing data — ok is false and
// the caller takes the encoding/json path, which reports errors.
func flatJSONRow(p *loadPlan, line []byte) (vals []any, present []bool, ok bool) {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return nil, nil, false
	}
	vals, present = make([]any, len(p.src)), make([]bool, len(p.src))
	i = skipWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		return vals, present, skipWS(line, i+1) == len(line)
	}
	for {
		ka, kb, ok := plainString(line, i)
		if !ok {
			return nil, nil, false
		}
		i = skipWS(line, kb+1)
		if i >= len(line) || line[i] != ':' {
			return nil, nil, false
		}
		i = skipWS(line, i+1)
		if i >= len(line) {
			return nil, nil, false
		}
		var v any
		switch c := line[i]; {
		case c == '"':
			a, b, ok := plainString(line, i)
			if !ok {
				return nil, nil, false
			}
			v, i = string(line[a:b]), b+1
		case c == 'n' || c == 't' || c == 'f':
			var lit string
			switch c {
			case 'n':
				lit, v = "null", nil
			case 't':
				lit, v = "true", true
			default:
				lit, v = "false", false
			}
			if len(line)-i < len(lit) || string(line[i:i+len(lit)]) != lit {
				return nil, nil, false
			}
			i += len(lit)
		case c == '-' || (c >= '0' && c <= '9'):
			n := numberEnd(line, i)
			if n < 0 {
				return nil, nil, false
			}
			v, i = json.Number(line[i:n]), n
		default:
			return nil, nil, false
		}
		idx, found := p.byName[string(line[ka:kb])]
		if !found {
			idx, found = p.byName[strings.ToLower(string(line[ka:kb]))]
		}
		if found {
			vals[idx], present[idx] = v, true
		}
		i = skipWS(line, i)
		if i >= len(line) {
			return nil, nil, false
		}
		switch line[i] {
		case '}':
			return vals, present, skipWS(line, i+1) == len(line)
		case ',':
			i = skipWS(line, i+1)
		default:
			return nil, nil, false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString finds the JSON string starting at b[i] == '"' and returns
// the bounds [a, end) of its content; ok is false unless it is closed and
// holds no escape, no control character and only valid UTF-8.
func plainString(b []byte, i int) (a, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[i+1:j]) {
				return 0, 0, false
			}
			return i + 1, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// numberEnd returns the end of the JSON number at b[i], or -1 when it does
// not follow the grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func numberEnd(b []byte, i int) int {
	digits := func(j int) int {
		k := j
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		return k
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		k := digits(i + 1)
		if k == i+1 {
			return -1
		}
		i = k
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		k := digits(i)
		if k == i {
			return -1
		}
		i = k
	}
	return i
}
