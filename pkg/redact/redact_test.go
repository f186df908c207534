package redact

import (
	"errors"
	"strings"
	"testing"
)

func mustNew(t testing.TB, p Policy) *Redactor {
	t.Helper()
	r, err := New(p)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// Realistic-looking but fake credentials.
const (
	jwtTok    = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	awsID     = "AKIAIOSFODNN7EXAMPLE"
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	pemBlock  = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpI\n-----END RSA PRIVATE KEY-----"
)

func TestBytesPatterns(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	tests := []struct{ name, in, want string }{
		// bearer
		{"bearer", "Bearer abc.DEF-123_~+/==", "Bearer [REDACTED]"},
		{"bearer lower", "auth: bearer abc123 rest", "auth: bearer [REDACTED] rest"},
		{"bearer upper spaces", "BEARER   tok\n", "BEARER   [REDACTED]\n"},
		{"bearer padding stops", "Bearer abc=def", "Bearer [REDACTED]def"},
		{"bearer in JSON string", `{"h":"Bearer xyz"}`, `{"h":"Bearer [REDACTED]"}`},
		{"bearer word no token", "the bearer.", "the bearer."},
		{"bearer at end", "token_type bearer", "token_type bearer"},
		{"bearer json value", `{"token_type":"Bearer","expires_in":3600}`, `{"token_type":"Bearer","expires_in":3600}`},
		{"bearer newline", "Bearer\nabc", "Bearer\nabc"},
		{"bearer inside word", "forbearer abc", "forbearer abc"},
		{"bearers", "bearers abc", "bearers abc"},
		// basic
		{"basic", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: [REDACTED]"},
		{"basic free", "use Basic dXNlcjpwYXNz here", "use Basic [REDACTED] here"},
		{"basic short", "Basic auth is fine", "Basic auth is fine"},
		{"basic 7", "basic abcdefg", "basic abcdefg"},
		{"basic no space", "basic:dXNlcjpwYXNz", "basic:dXNlcjpwYXNz"},
		// jwt
		{"jwt", "x " + jwtTok + " y", "x [REDACTED] y"},
		{"jwt empty sig", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "[REDACTED]"},
		{"jwt in query", "/cb?id_token=" + jwtTok + "&s=1", "/cb?id_token=[REDACTED]&s=1"},
		{"jwt two segments", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0 end", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0 end"},
		{"jwt non-eyJ payload", "eyJhbGciOiJub25lIn0.abc.def", "eyJhbGciOiJub25lIn0.abc.def"},
		{"eyJ alone", "keyJar eyJ.", "keyJar eyJ."},
		// aws access key
		{"aws id", "id=" + awsID + ";", "id=[REDACTED];"},
		{"aws id prefixes", "ASIAABCDEFGHIJKLMNOP ACCA0123456789ABCDEF", "[REDACTED] [REDACTED]"},
		{"aws id in word", "x" + awsID + " " + awsID + "x", "x" + awsID + " " + awsID + "x"},
		{"aws id short", "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPL"},
		{"aws id lower", "AKIAiosfodnn7example", "AKIAiosfodnn7example"},
		{"aws id underscore", "KEY_" + awsID, "KEY_[REDACTED]"},
		{"AKIA word", "AKIAS are birds; AKIA", "AKIAS are birds; AKIA"},
		// aws secret key
		{"aws secret ini", "aws_secret_access_key = " + awsSecret + "\n", "aws_secret_access_key = [REDACTED]\n"},
		{"aws secret env", "AWS_SECRET_ACCESS_KEY=" + awsSecret, "AWS_SECRET_ACCESS_KEY=[REDACTED]"},
		{"aws secret dash", "aws-secret-access-key: " + awsSecret, "aws-secret-access-key: [REDACTED]"},
		{"aws secret json", `{"SecretAccessKey": "` + awsSecret + `"}`, `{"SecretAccessKey": "[REDACTED]"}`},
		{"aws secret quoted key", `'aws_secret_access_key' : '` + awsSecret + `'`, `'aws_secret_access_key' : '[REDACTED]'`},
		{"aws secret short", "aws_secret_access_key=short", "aws_secret_access_key=short"},
		// private key
		{"pem", "a\n" + pemBlock + "\nb", "a\n[REDACTED]\nb"},
		{"pem plain", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "[REDACTED]"},
		{"pem openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----!", "[REDACTED]!"},
		{"pem unterminated", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE", "[REDACTED]"},
		{"pem in json", `{"k":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"}`, `{"k":"[REDACTED]\n"}`},
		{"certificate kept", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
		{"pem public kept", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"},
		// nothing
		{"plain", "hello, world: a=b", "hello, world: a=b"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(r.Bytes([]byte(tt.in))); got != tt.want {
				t.Errorf("Bytes(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestBytesFields(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	tests := []struct{ name, in, want string }{
		{"string", `{"password":"hunter2"}`, `{"password":"[REDACTED]"}`},
		{"spacing kept", `{ "password" :  "hunter2" , "a":1}`, `{ "password" :  "[REDACTED]" , "a":1}`},
		{"case", `{"PassWord":"x","ApiKey":"y","APIKEY":"z"}`, `{"PassWord":"[REDACTED]","ApiKey":"[REDACTED]","APIKEY":"[REDACTED]"}`},
		{"escaped quote", `{"secret":"a\"b\\","n":1}`, `{"secret":"[REDACTED]","n":1}`},
		{"escaped backslash end", `{"secret":"a\\\\"}`, `{"secret":"[REDACTED]"}`},
		{"number", `{"token":12345,"b":2}`, `{"token":"[REDACTED]","b":2}`},
		{"negative float", `{"token":-1.5e+3}`, `{"token":"[REDACTED]"}`},
		{"true", `{"token":true}`, `{"token":"[REDACTED]"}`},
		{"null", `{"token":null}`, `{"token":"[REDACTED]"}`},
		{"empty string", `{"token":""}`, `{"token":"[REDACTED]"}`},
		{"object", `{"secret":{"a":"}","b":[1,{"c":2}]},"x":3}`, `{"secret":"[REDACTED]","x":3}`},
		{"array", `{"token":["a","]",{"b":1}] , "x":3}`, `{"token":"[REDACTED]" , "x":3}`},
		{"nested", `{"a":{"b":[{"client_secret":"s1"},{"refresh_token":"s2"}]}}`, `{"a":{"b":[{"client_secret":"[REDACTED]"},{"refresh_token":"[REDACTED]"}]}}`},
		{"pretty", "{\n  \"access_token\": \"abc\",\n  \"token_type\": \"bearer\"\n}", "{\n  \"access_token\": \"[REDACTED]\",\n  \"token_type\": \"bearer\"\n}"},
		{"unterminated", `{"password":"abc`, `{"password":"[REDACTED]"`},
		{"embedded json", `{"body":"{\"password\":\"x\\\"y\",\"n\":1}"}`, `{"body":"{\"password\":\"[REDACTED]\",\"n\":1}"}`},
		{"embedded number", `"{\"token\":42}"`, `"{\"token\":\"[REDACTED]\"}"`},
		{"embedded object", `"{\"secret\":{\"a\":\"}\"},\"b\":1}"`, `"{\"secret\":\"[REDACTED]\",\"b\":1}"`},
		{"doubly embedded", `"\"{\\\"token\\\":\\\"x\\\"}\""`, `"\"{\\\"token\\\":\\\"[REDACTED]\\\"}\""`},
		{"form", "user=bob&password=hunter2&x=1", "user=bob&password=[REDACTED]&x=1"},
		{"form at end", "password=hunter2", "password=[REDACTED]"},
		{"form empty value", "password=&x=1", "password=&x=1"},
		{"query", "GET /cb?code=1&access_token=abc;x HTTP/1.1", "GET /cb?code=1&access_token=[REDACTED];x HTTP/1.1"},
		{"fragment", "https://app/cb#access_token=abc&state=1", "https://app/cb#access_token=[REDACTED]&state=1"},
		{"form quotes", `href="/x?token=abc" t='token=def'`, `href="/x?token=[REDACTED]" t='token=[REDACTED]'`},
		{"form newline", "a=1\ntoken=abc\n", "a=1\ntoken=[REDACTED]\n"},
		{"cookie pairs", "lang=en; token=abc; theme=dark", "lang=en; token=[REDACTED]; theme=dark"},
		{"form name suffix", "mytoken=abc&xpassword=def", "mytoken=abc&xpassword=def"},
		{"header line", "GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=1; x=2\r\nX-API-KEY:k\r\n\r\nbody", "GET / HTTP/1.1\r\nHost: a\r\nCookie: [REDACTED]\r\nX-API-KEY:[REDACTED]\r\n\r\nbody"},
		{"header line start", "Authorization: Basic Zm9vOmJhcg==\r\n", "Authorization: [REDACTED]\r\n"},
		{"header not at line start", "see Cookie: chocolate", "see Cookie: chocolate"},
		{"header empty value", "Cookie:\r\nHost: x", "Cookie:\r\nHost: x"},
		// a pattern starting inside a masked value is masked to its end
		{"pem after key", "\"token\":\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nx", "\"token\":\n\"[REDACTED]\"\nx"},
		{"pem in form value", "token=-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----&x=1", "token=[REDACTED]&x=1"},
		{"bearer in form value", "token=Bearer abc&x=1", "token=[REDACTED]&x=1"},
		{"jwt in aws secret", "aws_secret_access_key=eyJhbGciOiJIUzI1NiJ9AAAAAAAAAAAAAAAAAAAAAA.eyJzdWIiOiIxIn0.sig x", "aws_secret_access_key=[REDACTED] x"},
		// no over-redaction
		{"tokenizer", `{"tokenizer":"bpe","passwords_count":3,"token_type":"x"}`, `{"tokenizer":"bpe","passwords_count":3,"token_type":"x"}`},
		{"key as value", `{"name":"password","kind":"token"}`, `{"name":"password","kind":"token"}`},
		{"prefix key", `{"my_password":"x","secretive":"y"}`, `{"my_password":"x","secretive":"y"}`},
		{"prose", "Enter your password: then a token.", "Enter your password: then a token."},
		{"escaped-looking key", `{"a":"x\\"password":"y"}`, `{"a":"x\\"password":"y"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(r.Bytes([]byte(tt.in))); got != tt.want {
				t.Errorf("Bytes(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestBytesNoAlloc(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	in := []byte(strings.Repeat(`{"id":7,"name":"bob","note":"a plain line of text"} `, 100))
	if out := r.Bytes(in); &out[0] != &in[0] || len(out) != len(in) {
		t.Fatal("Bytes copied an input without matches")
	}
	if n := testing.AllocsPerRun(20, func() { r.Bytes(in) }); n != 0 {
		t.Fatalf("Bytes allocated %v times for an input without matches", n)
	}
}

func TestPolicyPicksRules(t *testing.T) {
	in := `{"password":"p","custom":"c"} Bearer b ` + jwtTok + " " + awsID
	tests := []struct {
		name string
		p    Policy
		want string
	}{
		{"zero policy", Policy{}, in},
		{"custom field only", Policy{JSONFields: []string{"Custom"}}, `{"password":"p","custom":"[REDACTED]"} Bearer b ` + jwtTok + " " + awsID},
		{"jwt only", Policy{Patterns: []string{"JWT"}}, `{"password":"p","custom":"c"} Bearer b [REDACTED] ` + awsID},
		{"bearer only", Policy{Patterns: []string{"bearer"}}, `{"password":"p","custom":"c"} Bearer [REDACTED] ` + jwtTok + " " + awsID},
		{"aws only", Policy{Patterns: []string{"aws-access-key"}}, `{"password":"p","custom":"c"} Bearer b ` + jwtTok + " [REDACTED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, tt.p)
			if got := string(r.Bytes([]byte(in))); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestOddFieldNames(t *testing.T) {
	r := mustNew(t, Policy{JSONFields: []string{"a=b", "my key", "x", "ключ"}})
	in := `{"a=b":1,"My Key":"v","x":[2],"X":3,"ключ":"s","КЛЮЧ":"t"} x=1&y=2`
	want := `{"a=b":"[REDACTED]","My Key":"[REDACTED]","x":"[REDACTED]","X":"[REDACTED]","ключ":"[REDACTED]","КЛЮЧ":"t"} x=[REDACTED]&y=2`
	if got := string(r.Bytes([]byte(in))); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want string
		is   error
	}{
		{"unknown pattern", Policy{Patterns: []string{"jwt", "x"}}, `unknown pattern "x" (known: bearer, jwt, basic, aws-access-key, aws-secret-key, private-key)`, ErrUnknownPattern},
		{"empty header", Policy{Headers: []string{"Cookie", ""}}, `Policy.Headers[1] "": invalid name: empty`, ErrInvalidName},
		{"empty field", Policy{JSONFields: []string{""}}, `Policy.JSONFields[0] "": invalid name: empty`, ErrInvalidName},
		{"bad header", Policy{Headers: []string{"X Key"}}, `invalid name: byte ' ' can never match`, ErrInvalidName},
		{"bad field", Policy{JSONFields: []string{`a"b`}}, `invalid name: byte '"' can never match`, ErrInvalidName},
		{"long field", Policy{JSONFields: []string{strings.Repeat("a", maxNameLen+1)}}, "longer than", ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.p)
			if err == nil {
				t.Fatal("New: no error")
			}
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.is) {
				t.Fatalf("New: %v; want it to contain %q and wrap %v", err, tt.want, tt.is)
			}
		})
	}
	if _, err := New(DefaultPolicy()); err != nil {
		t.Fatalf("default policy: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	if got := strings.Join(PatternNames(), ","); got != "bearer,jwt,basic,aws-access-key,aws-secret-key,private-key" {
		t.Errorf("PatternNames = %s", got)
	}
	if len(DefaultPatterns()) != len(PatternNames()) {
		t.Error("DefaultPatterns is not every pattern")
	}
	// Callers may modify what they get.
	DefaultHeaders()[0] = "x"
	if DefaultHeaders()[0] != "Authorization" {
		t.Error("DefaultHeaders shares its slice")
	}
	p := DefaultPolicy()
	if len(p.Headers) != 5 || len(p.JSONFields) != 8 || len(p.Patterns) != 6 {
		t.Errorf("DefaultPolicy = %+v", p)
	}
}

func TestHeader(t *testing.T) {
	r := mustNew(t, DefaultPolicy())
	tests := []struct{ name, value, want string }{
		{"Authorization", "Bearer abc", Mask},
		{"authorization", "anything", Mask},
		{"SET-COOKIE", "a=b", Mask},
		{"x-api-key", "k", Mask},
		{"Proxy-Authorization", "Basic Zm9vOmJhcg==", Mask},
		{"X-Forwarded-Authorization", "Bearer abc", "Bearer [REDACTED]"},
		{"Referer", "https://a/cb?access_token=abc&x=1", "https://a/cb?access_token=[REDACTED]&x=1"},
		{"Location", "/cb#token=" + jwtTok, "/cb#token=[REDACTED]"},
		{"X-Debug", awsID, Mask},
		{"Content-Type", "application/json", "application/json"},
		{"Host", "example.com:443", "example.com:443"},
	}
	for _, tt := range tests {
		if got := r.Header(tt.name, tt.value); got != tt.want {
			t.Errorf("Header(%q, %q) = %q, want %q", tt.name, tt.value, got, tt.want)
		}
	}
	if r.HeaderListed("Cookie2") || !r.HeaderListed("COOKIE") {
		t.Error("HeaderListed")
	}
	if n := testing.AllocsPerRun(20, func() { r.Header("Content-Type", "text/html; charset=utf-8") }); n != 0 {
		t.Errorf("Header allocated %v times for a plain value", n)
	}
}

func TestLevel(t *testing.T) {
	for r, want := range []int{0, 1, 0, 2, 0, 1, 0, 3} {
		if got := level(r); got != want {
			t.Errorf("level(%d) = %d, want %d", r, got, want)
		}
	}
}
