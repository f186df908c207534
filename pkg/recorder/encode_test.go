package recorder

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/intransit/intransit/pkg/recording"
)

// interesting strings for JSON escaping.
var jsonStrings = []string{
	"", "plain", `quote " and backslash \`, "<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f",
	"\x00\x01\x1f\x7f", "é ü 日本 🙂", "\u2028 and \u2029", "bad utf8 \xff\xfe \xc3", "\xe2\x80", "trunc \xf0\x9f\x99",
	"Bearer [REDACTED]", "/v1/items?access_token=[REDACTED]&page=2",
}

func checkSame(t *testing.T, what string, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonStrings {
		checkSame(t, "string", appendString(nil, s), s)
	}
	heads := []recording.HTTPHead{
		{},
		{Request: true, Method: "GET", Target: "/", Proto: "HTTP/1.1", Headers: []recording.Header{}},
		{Proto: "HTTP/1.0", Status: 404, Reason: "Not Found", Headers: []recording.Header{{Name: "A", Value: ""}}, Chunked: true},
	}
	for _, s := range jsonStrings {
		heads = append(heads, recording.HTTPHead{Request: true, Method: s, Target: s, Proto: s, Status: 599, Reason: s,
			Headers: []recording.Header{{Name: s, Value: s}, {Name: "x", Value: s}}})
	}
	for i := range heads {
		checkSame(t, "head", appendHead([]byte("prefix"), &heads[i])[len("prefix"):], heads[i])
	}
	ends := []recording.HTTPEnd{{}, {BodySize: -1}, {BodySize: 1 << 40, Trailers: []recording.Header{}},
		{BodySize: 3, Trailers: []recording.Header{{Name: "X-T", Value: "<v>"}}}}
	for i := range ends {
		checkSame(t, "end", appendEnd(nil, &ends[i]), ends[i])
	}
	for _, s := range jsonStrings {
		n := recording.Note{Code: s, Message: s}
		checkSame(t, "note", appendNote(nil, &n), n)
	}
}

// TestEncodeCoversEveryField fills every field of the encoded types with a
// non-zero value: a field added to recording's types and not to the
// encoder fails here.
func TestEncodeCoversEveryField(t *testing.T) {
	var h recording.HTTPHead
	var e recording.HTTPEnd
	var n recording.Note
	for _, v := range []any{&h, &e, &n} {
		fill(t, reflect.ValueOf(v).Elem())
	}
	checkSame(t, "head", appendHead(nil, &h), h)
	checkSame(t, "end", appendEnd(nil, &e), e)
	checkSame(t, "note", appendNote(nil, &n), n)
}

func fill(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(t, v.Field(i))
		}
	case reflect.String:
		v.SetString("s<" + v.Type().String() + ">")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(42)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(42)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fill(t, s.Index(i))
		}
		v.Set(s)
	default:
		t.Fatalf("fill: field of kind %s: extend the encoder and this test", v.Kind())
	}
}

func TestEncodeRandomStrings(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("a\"\\<>&\x00\x1f\x7f\n\t\xe2\x80\xa8\xa9\xff\xc3\xa9\xf0\x9f")
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		checkSame(t, "string", appendString(nil, string(b)), string(b))
		if t.Failed() {
			return
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkSame(t, "string", appendString(nil, s), s)
	})
}
