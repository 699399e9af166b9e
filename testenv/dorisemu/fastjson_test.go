package dorisemu

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// slowJSONRow is what readJSONLine does without the fast path.
func slowJSONRow(p *loadPlan, line []byte) ([]any, []bool, bool) {
	v, err := decodeJSON(line)
	if err != nil {
		return nil, nil, false
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, nil, false
	}
	vals, present := make([]any, len(p.src)), make([]bool, len(p.src))
	for k, x := range obj {
		if i, ok := p.byName[strings.ToLower(k)]; ok {
			vals[i], present[i] = x, true
		}
	}
	return vals, present, true
}

func TestFlatJSONRowMatchesEncodingJSON(t *testing.T) {
	p := &loadPlan{byName: map[string]int{"a": 0, "b": 1, "__doris_delete_sign__": 2}}
	p.src = make([]srcField, 3)
	accepted := []string{
		`{"a":1,"b":"x","__DORIS_DELETE_SIGN__":0}`,
		` { "a" : -0.5e+3 , "b" : null } `,
		`{"a":true,"b":false}`,
		`{}`,
		`{"a":"ünï €","b":"dup","b":"last"}`,
		`{"zzz":1,"a":0}`,
		`{"a":12345678901234567890123}`,
	}
	for _, l := range accepted {
		fv, fp, ok := flatJSONRow(p, []byte(l))
		require.True(t, ok, "fast path should take %s", l)
		sv, sp, sok := slowJSONRow(p, []byte(l))
		require.True(t, sok, l)
		require.Equal(t, sp, fp, l)
		require.Equal(t, sv, fv, l)
	}
	// Lines the fast path leaves to encoding/json: escapes, nesting,
	// arrays, bad numbers or literals, invalid UTF-8, trailing data.
	for _, l := range []string{
		`{"a":"x\"y"}`, `{"a":{"b":1}}`, `[{"a":1}]`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`,
		`{"a":nul}`, `{"a":"` + "\xff" + `"}`, `{"a":1} x`, `{"a":1}{}`, `{"a":1`, `{"a" 1}`, `{"a":"tab` + "\t" + `"}`,
		`{"a":1,}`, `{a:1}`, ``, `{"a":+1}`,
	} {
		_, _, ok := flatJSONRow(p, []byte(l))
		require.False(t, ok, "fast path must not take %q", l)
	}
}

func TestParseDateTimeDateFirst(t *testing.T) {
	for s, want := range map[string]string{
		"2024-02-29": "2024-02-29T00:00:00Z", " 1970-01-01 ": "1970-01-01T00:00:00Z",
		"2024-02-29 10:11:12.5": "2024-02-29T10:11:12.5Z", "20240229": "2024-02-29T00:00:00Z",
		"2024-02-30": "", "2024-2-3": "",
	} {
		tm, ok := parseDateTime(s)
		require.Equal(t, want != "", ok, s)
		if ok {
			require.Equal(t, want, tm.Format(time.RFC3339Nano), s)
		}
	}
}
