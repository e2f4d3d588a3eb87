// Package tlsfile serves TLS certificates from files that are replaced
// while the process runs (cert-manager rewriting a mounted Secret, a cron
// job renewing a certificate): every handshake reads the files again and
// parses them when their contents changed, so a rotated certificate is used
// on the next connection without a restart.
//
// The files are small; reading them on each handshake costs a few
// microseconds, far below the handshake itself, and compares contents
// rather than modification times (which a copy can keep, and which some
// file systems round to seconds).
//
// A replacement caught half-written (the new certificate beside the old
// key) does not parse; the last pair that did is served meanwhile, and the
// failure is logged once per distinct contents.
package tlsfile

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// KeyPair is a certificate and its private key read from two PEM files.
// It is safe for concurrent use.
type KeyPair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex // guards the fields below; held while reading the files
	certPEM []byte     // contents of the pair in cert
	keyPEM  []byte
	cert    *tls.Certificate
	bad     string // the failure logged last (error and contents)
}

// LoadKeyPair reads certFile and keyFile; an error says which is wrong.
// log receives the failures of later reloads (nil: discard).
func LoadKeyPair(certFile, keyFile string, log *slog.Logger) (*KeyPair, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KeyPair{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := k.Certificate(); err != nil {
		return nil, err
	}
	return k, nil
}

// Certificate returns the pair as the files hold it now, or the last pair
// that parsed when they cannot be read or parsed at the moment. It fails
// only when no pair ever parsed.
func (k *KeyPair) Certificate() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	certPEM, err := os.ReadFile(k.certFile)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = os.ReadFile(k.keyFile)
	}
	if err == nil && k.cert != nil && bytes.Equal(certPEM, k.certPEM) && bytes.Equal(keyPEM, k.keyPEM) {
		return k.cert, nil
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		err = fmt.Errorf("certificate %s with key %s: %w", k.certFile, k.keyFile, err)
		if k.cert == nil {
			return nil, err
		}
		if bad := err.Error() + string(certPEM) + string(keyPEM); bad != k.bad {
			k.bad = bad
			k.log.Warn("a replaced certificate does not load; serving the previous one", "err", err)
		}
		return k.cert, nil
	}
	if k.cert != nil {
		k.log.Info("certificate reloaded", "file", k.certFile)
	}
	k.certPEM, k.keyPEM, k.cert, k.bad = certPEM, keyPEM, &cert, ""
	return k.cert, nil
}

// GetCertificate is for tls.Config.GetCertificate (a server's
// certificate).
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate()
}

// GetClientCertificate is for tls.Config.GetClientCertificate (a client's
// certificate).
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Certificate()
}

// CAPool is a set of CA certificates read from one PEM file, read again
// like a KeyPair's. It is safe for concurrent use.
type CAPool struct {
	file string
	log  *slog.Logger

	mu   sync.Mutex // guards the fields below; held while reading the file
	pem  []byte
	pool *x509.CertPool
	bad  string // the failure logged last (error and contents)
}

// LoadCAPool reads file; log receives the failures of later reloads (nil:
// discard).
func LoadCAPool(file string, log *slog.Logger) (*CAPool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &CAPool{file: file, log: log}
	if _, err := p.Pool(); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool returns the certificates as the file holds them now, or the last
// set that parsed.
func (p *CAPool) Pool() (*x509.CertPool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := os.ReadFile(p.file)
	if err == nil && p.pool != nil && bytes.Equal(b, p.pem) {
		return p.pool, nil
	}
	pool := x509.NewCertPool()
	if err == nil && !pool.AppendCertsFromPEM(b) {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		err = fmt.Errorf("CA certificates %s: %w", p.file, err)
		if p.pool == nil {
			return nil, err
		}
		if bad := err.Error() + string(b); bad != p.bad {
			p.bad = bad
			p.log.Warn("replaced CA certificates do not load; using the previous ones", "err", err)
		}
		return p.pool, nil
	}
	p.pem, p.pool, p.bad = b, pool, ""
	return pool, nil
}
