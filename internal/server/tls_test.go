package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/letterbox/letterbox/internal/config"
)

func TestSelfSignedCertificateGeneratedOnce(t *testing.T) {
	cfg := &config.Config{Hostname: "mail.example.org", DataDir: t.TempDir(), File: "test.toml"}
	c1, err := loadTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c1.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c1.MinVersion)
	}
	leaf, err := x509.ParseCertificate(c1.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key type %T, want ECDSA", leaf.PublicKey)
	}
	if err := leaf.VerifyHostname("mail.example.org"); err != nil {
		t.Errorf("SAN: %v", err)
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, "tls", "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v mode %v", err, fi.Mode())
	}
	c2, err := loadTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1.Certificates[0].Certificate[0], c2.Certificates[0].Certificate[0]) {
		t.Error("certificate regenerated on second load")
	}
}

func TestConfiguredCertificate(t *testing.T) {
	dir := t.TempDir()
	gen := &config.Config{Hostname: "other.example.org", DataDir: dir}
	if _, err := loadTLS(gen); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Hostname: "mail.example.org", DataDir: t.TempDir(), File: "test.toml",
		TLS: config.TLS{CertFile: filepath.Join(dir, "tls", "cert.pem"), KeyFile: filepath.Join(dir, "tls", "key.pem")}}
	c, err := loadTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificates[0].Certificate[0])
	if leaf.Subject.CommonName != "other.example.org" {
		t.Errorf("configured certificate not used: CN %q", leaf.Subject.CommonName)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "tls")); err == nil {
		t.Error("a certificate was generated although one is configured")
	}
	// A key that does not match is a config error naming the file.
	os.WriteFile(cfg.TLS.KeyFile, []byte("garbage"), 0o600)
	if _, err := loadTLS(cfg); err == nil {
		t.Fatal("bad key accepted")
	} else if ce, ok := err.(*config.Error); !ok || ce.File != "test.toml" {
		t.Fatalf("bad key error %v is not a config error naming the file", err)
	}
}
