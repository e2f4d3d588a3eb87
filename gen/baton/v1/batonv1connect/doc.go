// Package batonv1connect is the generated connect-go code of Baton's
// socket API: the clients and handlers of TaskService, LockService and
// ConfigService (protoc-gen-connect-go, `make generate`). This file is
// the only one here written by hand.
package batonv1connect
