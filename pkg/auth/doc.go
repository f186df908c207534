// Package auth authenticates the workloads behind an intransit tunnel.
//
// The outbound agent gets a workload token from a TokenSource (a file, an
// OAuth2 client-credentials grant, or the Kubernetes TokenRequest API) and
// presents it as "Authorization: Bearer". The inbound agent checks it with a
// Verifier (OIDC discovery or a static JWKS file) and decides with Allowed
// whether the verified claims, the mTLS peer certificate, or both may reach
// a service.
//
// Every refusal is an *Error whose Reason is a short stable label (see
// Reasons) for audit events and metrics.
package auth
