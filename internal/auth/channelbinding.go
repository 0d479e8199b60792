package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"hash"
)

// Channel binding types of SCRAM-SHA-256-PLUS (RFC 5056 names, as they
// appear after "p=" in the GS2 header, RFC 5802 §7).
const (
	CBTLSServerEndPoint = "tls-server-end-point" // RFC 5929 §4
	CBTLSExporter       = "tls-exporter"         // RFC 9266
)

// ChannelBindings is the channel binding data of one TLS connection, as
// the server sees it. A nil field means that type is not available on the
// connection. The zero value (no TLS) has none.
type ChannelBindings struct {
	// ServerEndPoint is the hash of the server certificate (RFC 5929 §4.1).
	ServerEndPoint []byte
	// Exporter is 32 octets exported with the label
	// "EXPORTER-Channel-Binding" and no context (RFC 9266 §2).
	Exporter []byte
}

// Available reports whether any channel binding type is available, which
// is when the server offers SCRAM-SHA-256-PLUS.
func (b ChannelBindings) Available() bool {
	return b.ServerEndPoint != nil || b.Exporter != nil
}

// data returns the binding data of the named type, nil if unavailable.
func (b ChannelBindings) data(cbType string) []byte {
	switch cbType {
	case CBTLSServerEndPoint:
		return b.ServerEndPoint
	case CBTLSExporter:
		return b.Exporter
	}
	return nil
}

// TLSChannelBindings computes the channel bindings of a server-side TLS
// connection whose handshake is complete. cfg is the configuration the
// connection was made with: Go's ConnectionState does not say which
// certificate the server sent, so tls-server-end-point is available only
// when cfg has exactly one certificate and no GetCertificate callback
// (then that certificate is the one sent). tls-exporter is available when
// keying material can be exported: TLS 1.3, or TLS 1.2 with the extended
// master secret (RFC 7627), which RFC 9266 requires for TLS 1.2 and
// crypto/tls enforces.
func TLSChannelBindings(cs tls.ConnectionState, cfg *tls.Config) ChannelBindings {
	var b ChannelBindings
	if !cs.HandshakeComplete {
		return b
	}
	if ekm, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32); err == nil {
		b.Exporter = ekm
	}
	if cfg != nil && cfg.GetCertificate == nil && len(cfg.Certificates) == 1 && len(cfg.Certificates[0].Certificate) > 0 {
		b.ServerEndPoint = serverEndPoint(cfg.Certificates[0])
	}
	return b
}

// serverEndPoint is the tls-server-end-point binding of cert (RFC 5929
// §4.1): the hash of the DER certificate exactly as sent, with the hash
// function of its signature algorithm, except that MD5 and SHA-1 are
// replaced by SHA-256. For a signature algorithm with no single hash
// function (Ed25519) RFC 5929 defines nothing, so there is no binding.
func serverEndPoint(cert tls.Certificate) []byte {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil
		}
	}
	var h hash.Hash
	switch leaf.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.DSAWithSHA256, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil
	}
	h.Write(cert.Certificate[0])
	return h.Sum(nil)
}
