// Package batonv1 is the generated Go code of Baton's socket API, the
// messages of proto/baton/v1 (protoc-gen-go, `make generate`). This file
// is the only one here written by hand.
package batonv1
