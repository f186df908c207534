package redact

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJSON(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	tests := []struct{ name, in, want string }{
		{"top level", `{"user":"bob","password":"hunter2"}`, `{"user":"bob","password":"[REDACTED]"}`},
		{"key order and spacing kept", "{\n  \"z\": 1,\n  \"Token\" : \"abc\",\n  \"a\": [1, 2]\n}", "{\n  \"z\": 1,\n  \"Token\" : \"[REDACTED]\",\n  \"a\": [1, 2]\n}"},
		{"depth", `{"a":{"b":{"c":{"client_secret":"x","d":1}}}}`, `{"a":{"b":{"c":{"client_secret":"[REDACTED]","d":1}}}}`},
		{"arrays of objects", `[{"token":"a"},{"token":"b","x":[{"apiKey":"c"}]}]`, `[{"token":"[REDACTED]"},{"token":"[REDACTED]","x":[{"apiKey":"[REDACTED]"}]}]`},
		{"every type", `{"secret":1.5,"token":true,"password":null,"api_key":{"a":"}"},"apikey":["]"]}`, `{"secret":"[REDACTED]","token":"[REDACTED]","password":"[REDACTED]","api_key":"[REDACTED]","apikey":"[REDACTED]"}`},
		{"escaped key", `{"pass\u0077ord":"x","p\"w":"y"}`, `{"pass\u0077ord":"[REDACTED]","p\"w":"y"}`},
		{"escapes in value", `{"password":"a\"b\\","n":"\"password\""}`, `{"password":"[REDACTED]","n":"\"password\""}`},
		{"listed name as value", `{"name":"password","kind":"token"}`, `{"name":"password","kind":"token"}`},
		{"pattern in string", `{"h":"Bearer abc","j":"` + jwtTok + `"}`, `{"h":"Bearer [REDACTED]","j":"[REDACTED]"}`},
		{"pattern in key", `{"` + awsID + `":1}`, `{"[REDACTED]":1}`},
		{"query in string", `{"url":"https://a/cb?code=1&access_token=abc\u0026x=1\"q"}`, `{"url":"https://a/cb?code=1&access_token=[REDACTED]\u0026x=1\"q"}`},
		{"form in string", `{"body":"user=bob&password=p\\w\"x"}`, `{"body":"user=bob&password=[REDACTED]\"x"}`},
		{"embedded json", `{"msg":"{\"password\":\"x\",\"n\":1}"}`, `{"msg":"{\"password\":\"[REDACTED]\",\"n\":1}"}`},
		{"pem in string", `{"key":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n","x":1}`, `{"key":"[REDACTED]\n","x":1}`},
		{"unterminated pem in string", `{"key":"-----BEGIN PRIVATE KEY-----\nMIIB","x":"y"}`, `{"key":"[REDACTED]","x":"y"}`},
		{"header lines in string", `{"raw":"Host: a\r\nCookie: sid=1\r\nX: b"}`, `{"raw":"Host: a\r\nCookie: [REDACTED]\r\nX: b"}`},
		{"nothing", `{"id":1,"tokenizer":"bpe","passwords_count":2}`, `{"id":1,"tokenizer":"bpe","passwords_count":2}`},
		{"scalar", `"Bearer abc"`, `"Bearer [REDACTED]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := r.JSON([]byte(tt.in))
			if !ok {
				t.Fatalf("JSON(%s): not ok", tt.in)
			}
			if string(got) != tt.want {
				t.Fatalf("JSON(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("JSON output is not valid JSON: %s", got)
			}
		})
	}
}

func TestJSONInvalid(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	for _, in := range []string{``, `{`, `{"password":"x"`, `{"a":1,}`, `password=x`, `{"a":1} {"b":2}`, "{\"a\":\"\x00\"}"} {
		if out, ok := r.JSON([]byte(in)); ok || out != nil {
			t.Errorf("JSON(%q) = %q, %v; want nil, false", in, out, ok)
		}
	}
}

// TestJSONAgreesWithValid: JSON accepts what json.Valid accepts, nesting
// limit included.
func TestJSONAgreesWithValid(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	for _, in := range []string{
		strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth),
		strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
		strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth),
		strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1),
		`-0.5e+10`, `01`, `1.`, `.5`, `-`, `1e`, `"\u12G4"`, `"\x"`, "\"\xff\"", ` true `, `nul`, `[1,]`, `{"a" 1}`, `{,}`,
	} {
		_, ok := r.JSON([]byte(in))
		if ok != json.Valid([]byte(in)) {
			t.Errorf("JSON(%.40q...) ok = %v, json.Valid disagrees", in, ok)
		}
	}
}

func TestJSONUnchangedIsInput(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	in := []byte(`{"a":[1,2,{"b":"c"}],"d":"plain text"}`)
	out, ok := r.JSON(in)
	if !ok || &out[0] != &in[0] {
		t.Fatal("JSON copied a document without matches")
	}
}

// TestJSONValuesDecode checks the result through encoding/json: every
// listed key decodes to Mask and nothing else changes.
func TestJSONValuesDecode(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	in := `{"z":{"password":{"deep":[1,2,3]}},"a":[{"TOKEN":9},{"keep":"me"}],"m":"x"}`
	out, ok := r.JSON([]byte(in))
	if !ok {
		t.Fatal("not ok")
	}
	var v struct {
		Z struct{ Password any }
		A []map[string]any
		M string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v.Z.Password != Mask || v.A[0]["TOKEN"] != Mask || v.A[1]["keep"] != "me" || v.M != "x" {
		t.Fatalf("decoded %+v from %s", v, out)
	}
	if !strings.HasPrefix(string(out), `{"z":{"password":`) || !strings.HasSuffix(string(out), `"m":"x"}`) {
		t.Fatalf("key order changed: %s", out)
	}
}
