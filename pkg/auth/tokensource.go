package auth

import "context"

// TokenSource gives the outbound side the workload token to present as
// "Authorization: Bearer".
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// maxTokenFileBytes bounds a token or secret read from a file.
const maxTokenFileBytes = 64 << 10
