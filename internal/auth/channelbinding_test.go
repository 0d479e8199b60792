package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// selfSigned returns a certificate for "cb.test" with the given key and
// signature algorithm.
func selfSigned(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "cb.test"},
		DNSNames:              []string{"cb.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// handshake connects a TLS client and server over a pipe and returns both
// connection states.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) (server, client tls.ConnectionState) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv, cli := tls.Server(c1, srvCfg), tls.Client(c2, cliCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return srv.ConnectionState(), cli.ConnectionState()
}

// The server's bindings equal what a client computes on the other end of
// the same connection (xdg-go/scram's client-side constructors), for TLS
// 1.3 and 1.2 and for certificates signed with SHA-256, SHA-384, SHA-512.
func TestTLSChannelBindingsMatchClient(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		alg     x509.SignatureAlgorithm
		hashLen int
	}{
		{"ecdsa-sha256", p256, x509.ECDSAWithSHA256, sha256.Size},
		{"ecdsa-sha384", p384, x509.ECDSAWithSHA384, sha512.Size384},
		{"ecdsa-sha512", p256, x509.ECDSAWithSHA512, sha512.Size},
	} {
		cert, pool := selfSigned(t, tc.key, tc.alg)
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			cliCfg := &tls.Config{RootCAs: pool, ServerName: "cb.test", MaxVersion: v}
			scs, ccs := handshake(t, srvCfg, cliCfg)
			got := TLSChannelBindings(scs, srvCfg)
			wantEP, err := scram.NewTLSServerEndpointBinding(&ccs)
			if err != nil {
				t.Fatal(err)
			}
			wantEx, err := scram.NewTLSExporterBinding(&ccs)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.ServerEndPoint) != tc.hashLen || !bytes.Equal(got.ServerEndPoint, wantEP.Data) {
				t.Errorf("%s TLS %x: server-end-point %x, client computes %x", tc.name, v, got.ServerEndPoint, wantEP.Data)
			}
			if len(got.Exporter) != 32 || !bytes.Equal(got.Exporter, wantEx.Data) {
				t.Errorf("%s TLS %x: exporter %x, client computes %x", tc.name, v, got.Exporter, wantEx.Data)
			}
			// A second connection has another exporter value, the same
			// certificate hash.
			scs2, _ := handshake(t, srvCfg, cliCfg)
			got2 := TLSChannelBindings(scs2, srvCfg)
			if bytes.Equal(got2.Exporter, got.Exporter) || !bytes.Equal(got2.ServerEndPoint, got.ServerEndPoint) {
				t.Errorf("%s TLS %x: second connection: exporter equal %v, end-point equal %v", tc.name, v,
					bytes.Equal(got2.Exporter, got.Exporter), bytes.Equal(got2.ServerEndPoint, got.ServerEndPoint))
			}
		}
	}
}

func TestTLSChannelBindingsUnavailable(t *testing.T) {
	// Ed25519: RFC 5929 defines no hash, so no tls-server-end-point.
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	cert, pool := selfSigned(t, edKey, x509.PureEd25519)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	scs, _ := handshake(t, srvCfg, &tls.Config{RootCAs: pool, ServerName: "cb.test"})
	if b := TLSChannelBindings(scs, srvCfg); b.ServerEndPoint != nil || b.Exporter == nil || !b.Available() {
		t.Errorf("ed25519: %+v", b)
	}
	// Several certificates, or a callback: which one was sent is not
	// known, so no tls-server-end-point; tls-exporter still.
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert2, pool2 := selfSigned(t, p256, x509.ECDSAWithSHA256)
	for _, cfg := range []*tls.Config{
		{Certificates: []tls.Certificate{cert2, cert}},
		{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert2, nil }},
	} {
		scs, _ := handshake(t, cfg, &tls.Config{RootCAs: pool2, ServerName: "cb.test"})
		if b := TLSChannelBindings(scs, cfg); b.ServerEndPoint != nil || b.Exporter == nil {
			t.Errorf("ambiguous certificate: %+v", b)
		}
	}
	// No TLS, or no handshake: nothing.
	if b := TLSChannelBindings(tls.ConnectionState{}, &tls.Config{Certificates: []tls.Certificate{cert2}}); b.Available() {
		t.Errorf("no handshake: %+v", b)
	}
	// RFC 5929 §4.1: MD5 and SHA-1 signatures hash with SHA-256.
	der := []byte("certificate DER")
	sum := sha256.Sum256(der)
	for _, alg := range []x509.SignatureAlgorithm{x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.MD5WithRSA} {
		got := serverEndPoint(tls.Certificate{Certificate: [][]byte{der}, Leaf: &x509.Certificate{SignatureAlgorithm: alg}})
		if !bytes.Equal(got, sum[:]) {
			t.Errorf("%v: %x, want SHA-256 %x", alg, got, sum)
		}
	}
}
