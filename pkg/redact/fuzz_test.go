package redact

import (
	"bytes"
	"encoding/json"
	"testing"
)

// plants are secrets holding canary; FuzzStream puts one between arbitrary
// bytes, each on a line of its own.
var plants = []string{
	`{"password":"CANARY"}`,
	`{"a":{"client_secret": {"x":["CANARY"]}}}`,
	`{"token": 12CANARY}`,
	`"{\"password\":\"CANARY\"}"`,
	"Authorization: Bearer CANARY.x",
	"X-Note: bearer CANARY",
	"Cookie: sid=CANARY",
	"GET /x?y=1&access_token=CANARY HTTP/1.1",
	"password=CANARY&x=1",
	"eyJhbGciOiJub25lIn0.eyJCANARY.sig",
	"x eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.CANARY",
	"AKIACANARY0123456789",
	"aws_secret_access_key = CANARY0123456789012345678901234567890123",
	"-----BEGIN RSA PRIVATE KEY-----\nCANARY\n-----END RSA PRIVATE KEY-----",
	"Basic CANARYdXNlcg==",
}

// FuzzStream: a canary planted into any input, split anywhere, never comes
// out of a Stream, and the Stream's output equals Bytes of the whole input.
func FuzzStream(f *testing.F) {
	for i, c := range streamCorpus {
		f.Add([]byte(c[:len(c)/2]), []byte(c[len(c)/2:]), uint8(i), []byte{1, 7, 3, 0, 30, 2})
	}
	f.Add([]byte(`{"password":"`), []byte(`"}`), uint8(0), []byte{5})
	f.Add([]byte("-----BEGIN PRIVATE KEY-----"), []byte("-----END PRIVATE KEY-----"), uint8(3), []byte{1, 1, 1})
	f.Add([]byte("Bearer"), []byte("ey"), uint8(9), []byte{200, 1})
	f.Add([]byte(`\`), []byte(`\"`), uint8(3), []byte{})
	r := mustNew(f, DefaultPolicy())
	f.Fuzz(func(t *testing.T, prefix, suffix []byte, kind uint8, cuts []byte) {
		if bytes.Contains(prefix, []byte(canary)) || bytes.Contains(suffix, []byte(canary)) {
			t.Skip()
		}
		in := make([]byte, 0, len(prefix)+len(suffix)+64)
		in = append(in, prefix...)
		in = append(in, '\n')
		in = append(in, plants[int(kind)%len(plants)]...)
		in = append(in, '\n')
		in = append(in, suffix...)

		want := r.Bytes(in)
		if bytes.Contains(want, []byte(canary)) {
			t.Fatalf("Bytes leaked the canary: %q", want)
		}
		var pieces [][]byte
		rest := in
		for _, c := range cuts {
			n := min(int(c)%64, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		pieces = append(pieces, rest)
		got := streamPieces(t, r, pieces)
		if bytes.Contains(got, []byte(canary)) {
			t.Fatalf("Stream leaked the canary: %q", got)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Stream output differs from Bytes\n got %q\nwant %q", got, want)
		}
		if out, ok := r.JSON(in); ok && bytes.Contains(out, []byte(canary)) {
			t.Fatalf("JSON leaked the canary: %q", out)
		}
	})
}

// FuzzJSON: JSON never panics, accepts exactly the valid documents, and its
// output is valid JSON.
func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"password":"x","a":[{"token":1}],"b":"Bearer abc"}`))
	f.Add([]byte(`{"msg":"{\"secret\":{\"a\":\"}\"}}","u":"?token=a\u0026b"}`))
	f.Add([]byte(`["-----BEGIN PRIVATE KEY-----\nAAA", "eyJa.eyJb.c"]`))
	f.Add([]byte(`{"s":"Cookie: a\r\nX: \\\"password\\\":1"}`))
	f.Add([]byte(`not json`))
	r := mustNew(f, DefaultPolicy())
	f.Fuzz(func(t *testing.T, in []byte) {
		out, ok := r.JSON(in)
		if ok != json.Valid(in) {
			t.Fatalf("JSON(%q) ok = %v, json.Valid = %v (out %q)", in, ok, !ok, out)
		}
		if ok && !json.Valid(out) {
			t.Fatalf("JSON(%q) = %q: not valid", in, out)
		}
		_ = r.Bytes(in)
	})
}
