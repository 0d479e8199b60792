package imap

import (
	"bytes"
	"compress/flate"
	"io"
)

// cmdCompress answers COMPRESS DEFLATE (RFC 4978): after the tagged OK both
// directions are raw DEFLATE streams (RFC 1951, no zlib header). Each flush
// of the response buffer ends with a deflate sync flush, so a command's
// responses still reach the client at once.
func (s *session) cmdCompress(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	alg, err := s.p.atom()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	if upper(alg) != "DEFLATE" {
		s.no(c.tag, "unsupported compression algorithm")
		return nil
	}
	if s.compressed {
		s.no(c.tag, "[COMPRESSIONACTIVE] DEFLATE is already active")
		return nil
	}
	s.ok(c.tag, "DEFLATE active")
	if err := s.bw.Flush(); err != nil {
		return err
	}
	// Octets the client sent after the command are already compressed.
	pending, _ := s.br.Peek(s.br.Buffered())
	pending = bytes.Clone(pending)
	fr := flate.NewReader(io.MultiReader(bytes.NewReader(pending), s.conn))
	fw, err := flate.NewWriter(connWriter{s}, flate.BestSpeed)
	if err != nil {
		return err
	}
	s.br.Reset(fr)
	s.bw.Reset(deflateWriter{fw})
	s.compressed = true
	return nil
}

// deflateWriter compresses and sync-flushes every write; the session's
// bufio.Writer above it makes that once per command (or per full buffer).
type deflateWriter struct{ fw *flate.Writer }

func (w deflateWriter) Write(p []byte) (int, error) {
	n, err := w.fw.Write(p)
	if err != nil {
		return n, err
	}
	return n, w.fw.Flush()
}
