package redact

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// canary is planted in every secret of the corpus: it must never come out.
const canary = "CANARY"

// streamCorpus holds inputs with secrets (each holding canary) and without.
var streamCorpus = []string{
	`{"user":"bob","password":"pw-CANARY-1","nested":{"a":[{"token":"CANARY2"}]},"n":1}`,
	"{\n  \"client_secret\" :\t\"CANARY\\\"3\\\\\",\n  \"apiKey\": 123CANARY4,\n  \"refresh_token\": {\"x\": [\"}\", \"CANARY5\"]}\n}",
	`{"body":"{\"password\":\"CANARY\\\"6\",\"n\":1}","ok":true}`,
	"POST /login?next=/home&access_token=CANARY7 HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer CANARY8.abc\r\nCookie: sid=CANARY9; lang=en\r\nX-Api-Key: CANARY10\r\n\r\nuser=bob&password=CANARY11&remember=1",
	"HTTP/1.1 200 OK\r\nSet-Cookie: s=CANARY12; HttpOnly\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\"CANARY13\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
	"log: calling with Bearer CANARY14abc== and basic dXNlcjpwCANARY15 done",
	"jwt=eyJhbGciOiJIUzI1NiJ9.eyJCANARY16IiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c next",
	"keys: AKIACANARYAAAAAAAAAA ASIACANARY0000000001 end",
	"[default]\naws_access_key_id = AKIACANARY9999999999\naws_secret_access_key = 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\n",
	`{"Credentials":{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKEYS"}}`,
	"ssh:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABlwAAAAdzc2gtcn\nNhAAAAAwEAAQAAAYEAxCANARY17\n-----END OPENSSH PRIVATE KEY-----\nafter -- the end -----",
	`{"cfg":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9wCANARY18\n-----END PRIVATE KEY-----\n","next":"eyJ"}`,
	"/cb#id_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJDQU5BUlkifQ.&state=xyz&token=CANARY19",
	// Near misses and innocuous text: kept as is.
	"the bearer. basic. eyJ eyJhbGciOiJub25lIn0 AKIA short -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n{\"tokenizer\":\"x\",\"passwords_count\":2} token_type=bearer & mytoken=x",
	strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit; key: value, a=b. ", 8),
	"ends with partials: Bea",
	"ends with partials: ey",
	"ends with partials: ----",
	`ends with partials: {"passwo`,
	`ends with key: {"password"   `,
	`ends with open value: {"password":"CANARY20`,
}

// collect returns an emit func appending to *dst, and checks that emit is
// never called with an empty slice.
func collect(t testing.TB, dst *[]byte) func([]byte) error {
	return func(p []byte) error {
		if len(p) == 0 {
			t.Error("emit called with no bytes")
		}
		*dst = append(*dst, p...)
		return nil
	}
}

// streamPieces writes pieces to a new Stream and returns its output.
func streamPieces(t testing.TB, r *Redactor, pieces [][]byte) []byte {
	t.Helper()
	var out []byte
	s := r.NewStream(collect(t, &out))
	for _, p := range pieces {
		if err := s.Write(p); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if s.Held() > MaxHold+len(p) {
			t.Fatalf("Held() = %d after a %d-byte write", s.Held(), len(p))
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if s.Held() != 0 {
		t.Fatalf("Held() = %d after Flush", s.Held())
	}
	return out
}

func checkStream(t *testing.T, r *Redactor, in string, pieces [][]byte, desc string) {
	t.Helper()
	want := r.Bytes([]byte(in))
	got := streamPieces(t, r, pieces)
	if bytes.Contains(got, []byte(canary)) {
		t.Fatalf("%s: canary leaked: %.300q", desc, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: stream output differs from Bytes\n got %.2000q\nwant %.2000q", desc, got, want)
	}
}

func TestCorpusBytes(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	for _, in := range streamCorpus {
		out := r.Bytes([]byte(in))
		if bytes.Contains(out, []byte(canary)) {
			t.Errorf("Bytes leaked: %q", out)
		}
		if !strings.Contains(in, canary) && string(out) != in && !strings.HasPrefix(in, "ends with") {
			t.Errorf("Bytes changed an input without secrets:\n got %q\nwant %q", out, in)
		}
	}
}

func TestStreamSplitEverywhere(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	for ci, in := range streamCorpus {
		b := []byte(in)
		checkStream(t, r, in, [][]byte{b}, "whole")
		for i := 0; i <= len(b); i++ {
			checkStream(t, r, in, [][]byte{b[:i], b[i:]}, "split")
		}
		bytewise := make([][]byte, len(b))
		for i := range b {
			bytewise[i] = b[i : i+1]
		}
		checkStream(t, r, in, bytewise, "byte by byte")
		rng := rand.New(rand.NewPCG(uint64(ci), 1))
		for range 300 {
			var pieces [][]byte
			for rest := b; len(rest) > 0; {
				n := min(len(rest), rng.IntN(24))
				pieces = append(pieces, rest[:n])
				rest = rest[n:]
			}
			checkStream(t, r, in, pieces, "random pieces")
		}
	}
}

// TestStreamAcrossContext puts the corpus after long filler so that the
// stream has dropped the start of its input and works from its context.
func TestStreamAcrossContext(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	filler := strings.Repeat("filler text without secrets\n", 200)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, c := range streamCorpus {
		in := filler + c + "\n" + filler + c
		b := []byte(in)
		for range 50 {
			var pieces [][]byte
			for rest := b; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(2000))
				pieces = append(pieces, rest[:n])
				rest = rest[n:]
			}
			checkStream(t, r, in, pieces, "after filler")
		}
	}
}

// TestStreamLargeWrites covers writes large enough to be scanned in place
// (Stream.direct), secrets straddling their seams included.
func TestStreamLargeWrites(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	var all []byte
	for range 20 {
		for _, c := range streamCorpus {
			all = append(all, c...)
			all = append(all, " plain filler text; "...)
		}
	}
	in := string(all)
	rng := rand.New(rand.NewPCG(11, 11))
	for range 100 {
		var pieces [][]byte
		for rest := all; len(rest) > 0; {
			n := min(len(rest), rng.IntN(20000))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		checkStream(t, r, in, pieces, "large writes")
	}
}

func TestStreamHeld(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	tests := []struct {
		in   string
		held int
	}{
		{"plain text ", 0},
		{"x Bea", 3},
		{"x Bearer ", 7},
		{"x Bearer abc", 10},
		{"x ey", 2},
		{"x e", 1},
		{"x ---", 3},
		{"x -------", 5},
		{`{"password":`, 1},
		{`{"password": "abc`, 6},
		{`{"password"`, 0}, // the key is context, not held
		{"x AKIA12", 6},
		{"x token=", 1},
		{"x token=abc", 4},
	}
	for _, tt := range tests {
		var out []byte
		s := r.NewStream(collect(t, &out))
		if err := s.Write([]byte(tt.in)); err != nil {
			t.Fatal(err)
		}
		if s.Held() != tt.held {
			t.Errorf("Write(%q): Held() = %d, want %d (emitted %q)", tt.in, s.Held(), tt.held, out)
		}
		if len(out)+s.Held() != len(tt.in) {
			t.Errorf("Write(%q): emitted %q and held %d", tt.in, out, s.Held())
		}
	}
}

// TestStreamMaxHold: a candidate longer than MaxHold is masked, and its
// remaining bytes are dropped until it ends.
func TestStreamMaxHold(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	big := strings.Repeat("CANARY", MaxHold/3)
	tests := []struct{ name, in, want string }{
		{"json string", `{"password":"` + big + `","n":1}`, `{"password":"[REDACTED]","n":1}`},
		{"json object", `{"secret":{"a":"` + big + `","b":[1,2]},"n":1}`, `{"secret":"[REDACTED]","n":1}`},
		{"form", "x=1&token=" + big + "&y=2", "x=1&token=[REDACTED]&y=2"},
		{"bearer", "Bearer " + big + " end", "Bearer [REDACTED] end"},
		{"pem", "-----BEGIN PRIVATE KEY-----\n" + big + "\n-----END PRIVATE KEY-----\nafter", "[REDACTED]\nafter"},
		{"jwt", "eyJhbGciOiJub25lIn0.eyJ" + big + ".sig after", "[REDACTED] after"},
		{"header", "Cookie: " + big + "\r\nHost: x\r\n", "Cookie: [REDACTED]\r\nHost: x\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(r.Bytes([]byte(tt.in))); got != tt.want {
				t.Fatalf("Bytes = %.200q", got)
			}
			for _, size := range []int{1000, 4096, 65536, 100000} {
				var pieces [][]byte
				for rest := []byte(tt.in); len(rest) > 0; {
					n := min(len(rest), size)
					pieces = append(pieces, rest[:n])
					rest = rest[n:]
				}
				got := streamPieces(t, r, pieces)
				if bytes.Contains(got, []byte(canary)) {
					t.Fatalf("pieces of %d: canary leaked", size)
				}
				// Masking the overflowing candidate gives the same output.
				if string(got) != tt.want {
					t.Fatalf("pieces of %d: got %.200q", size, got)
				}
			}
		})
	}
	// A value that never ends is masked to the end of the stream.
	got := streamPieces(t, r, [][]byte{[]byte(`{"token":"` + big), []byte(big)})
	if string(got) != `{"token":"[REDACTED]"` {
		t.Fatalf("unterminated: %.200q", got)
	}
	// Long runs that are no candidate are not held.
	var out []byte
	s := r.NewStream(collect(t, &out))
	if err := s.Write([]byte("eyJ" + strings.Repeat("a", 3*MaxHold))); err != nil {
		t.Fatal(err)
	}
	if s.Held() != 0 {
		t.Fatalf("a JWT-like run with a huge header is held: %d", s.Held())
	}
}

// TestConcurrentUse shares one Redactor between goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	done := make(chan []byte)
	for g := range 4 {
		go func() {
			var out []byte
			for i, c := range streamCorpus {
				if (i+g)%2 == 0 {
					out = append(out, r.Bytes([]byte(c))...)
				} else {
					// Not streamPieces: no t.Fatal off the test goroutine.
					s := r.NewStream(func(p []byte) error { out = append(out, p...); return nil })
					if err := errors.Join(s.Write([]byte(c[:len(c)/2])), s.Write([]byte(c[len(c)/2:])), s.Flush()); err != nil {
						t.Error(err)
					}
				}
				r.JSON([]byte(c))
				r.Header("X-Test", c)
			}
			done <- out
		}()
	}
	for range 4 {
		if out := <-done; bytes.Contains(out, []byte(canary)) {
			t.Errorf("canary leaked: %.300q", out)
		}
	}
}

func TestStreamEmitError(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	boom := errors.New("boom")
	calls := 0
	s := r.NewStream(func([]byte) error { calls++; return boom })
	err := s.Write([]byte("hello"))
	if !errors.Is(err, boom) {
		t.Fatalf("Write: %v, want boom", err)
	}
	if err2 := s.Write([]byte("more")); !errors.Is(err2, boom) || calls != 1 {
		t.Fatalf("second Write: %v after %d emits", err2, calls)
	}
	if err3 := s.Flush(); !errors.Is(err3, boom) {
		t.Fatalf("Flush: %v", err3)
	}
}

func TestStreamFlushRestarts(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	var out []byte
	s := r.NewStream(collect(t, &out))
	for _, p := range []string{"Bearer", "", "password=x", "&"} {
		if err := s.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Each flush ends a stream: "Bearer" has no token, and "password=x"
	// starts a new one (start of input is a field boundary).
	if string(out) != "Bearerpassword=[REDACTED]&" {
		t.Fatalf("got %q", out)
	}
}

func TestStreamSteadyStateNoAlloc(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	plain := benchText(64 << 10)
	secrets := benchSecrets(64 << 10)
	for _, in := range [][]byte{plain, secrets} {
		s := r.NewStream(func([]byte) error { return nil })
		for range 3 { // warm up the buffers
			if err := s.Write(in); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(20, func() { _ = s.Write(in) }); n != 0 {
			t.Errorf("Write allocated %v times per call", n)
		}
	}
}
