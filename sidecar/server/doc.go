// Package server serves the sidecar's socket API: the Connect handlers of
// TaskService, LockService and ConfigService, the mapping of
// errors to Connect codes, and the Unix socket listener. It holds no
// coordination logic; that lives in workqueue, coord and configdoc. It
// decides what a socket caller may reach: the peers it serves
// (PeerPolicy) and the queues Next and Submit may name (Scope).
//
// One handler serves the Connect protocol (JSON or binary), gRPC and
// gRPC-Web; the listener speaks HTTP/1.1 and HTTP/2 without TLS (h2c), so
// curl, Python's http.client and grpcio all work over the socket.
package server
