package imap

import (
	"bytes"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// COMPRESS=DEFLATE (RFC 4978). After the tagged OK both directions are raw
// DEFLATE streams (RFC 1951, no zlib header or trailer, RFC 4978 §3).
//
// Decompressing: RFC 4978 leaves the flush mode to the sender. zlib's
// Z_SYNC_FLUSH and Z_FULL_FLUSH end a command with an empty stored block,
// but Z_PARTIAL_FLUSH (isync/mbsync) only ends the current Huffman block and
// starts an empty fixed-code block whose last bits stay in the client's
// buffer until its next command. Go's compress/flate Reader hands out
// decoded bytes only at a stored block, a full window or the end of the
// stream, so such a command would never be seen. klauspost/compress's
// Reader with WithPartialBlock returns the decoded bytes at every block end
// (RFC 1951 §3.2.3 end-of-block code); it never reads more bits than the
// symbols it decodes need, so it waits for input only when the command is
// complete.
//
// Compressing: every write the session's bufio.Writer passes down (one per
// flush of the response buffer: per command, per IDLE push, per literal
// continuation, or per full 32 KiB buffer) is compressed with
// flate.StatelessDeflate and ends with an empty stored block, i.e. a sync
// flush (RFC 1951 §3.2.4), so nothing is held back from the client. The
// last 8 KiB of plaintext sent are kept as the dictionary for the next
// write, so short responses still compress against the previous ones.
//
// Memory per compressed session, measured with klauspost/compress v1.20.4:
// the decompressor holds about 40 KiB (the 32 KiB window a client may refer
// back to, a 4 KiB input buffer and Huffman tables), the compressor 8 KiB
// (the dictionary). The encoder's hash table (16 KiB, on the stack), its
// token and bit-writer buffers (pooled, about 300 KiB per concurrent
// compression) and the output buffer (pooled, up to 32 KiB, held until the
// socket write returns) exist only during a write, which also allocates a
// short-lived copy of dictionary plus input (at most 32 KiB). A stateful
// flate.Writer would keep its window and hash tables per session instead:
// 0.8–1.2 MiB at any level, with compress/flate or klauspost alike (zlib's
// compressor, which Dovecot uses, holds about 256 KiB), which is too much
// for a server that keeps thousands of IDLE connections open.
//
// Compression level: the stateless encoder is a fast, level-1-like one.
// Measured on a mail corpus in 32 KiB flushes, its output is 20% of the
// input (zlib level 1: 20%; zlib level 6, Dovecot's default: 17%) at
// about 200 MB/s per core (zlib level 6: about 25 MB/s). Large FETCH
// responses are CPU-bound on the server and much of their volume (base64
// attachments) gains little from a higher level, so speed wins.

// deflateDict is how much already-sent plaintext the compressor may refer
// back to (StatelessDeflate's maximum).
const deflateDict = 8 << 10

// deflateChunk bounds the input of one StatelessDeflate call and thereby
// the pooled output buffers.
const deflateChunk = 32 << 10

var deflateBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// cmdCompress answers COMPRESS DEFLATE (RFC 4978 §3). The command is valid
// in the authenticated and selected states (command-auth in its formal
// syntax, §5).
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
	// RFC 4978 §3: NO with COMPRESSIONACTIVE when the same mechanism is
	// already active. crypto/tls never negotiates TLS compression, so only
	// a second COMPRESS (e.g. after UNAUTHENTICATE and a new login) gets it.
	if s.compressed {
		s.no(c.tag, "[COMPRESSIONACTIVE] DEFLATE is already active")
		return nil
	}
	s.ok(c.tag, "DEFLATE active")
	if err := s.bw.Flush(); err != nil {
		return err
	}
	// The server compresses from the octet after the tagged OK's CRLF, the
	// client from its first command after COMPRESS (RFC 4978 §3); octets
	// it sent after the command are therefore already compressed.
	pending, _ := s.br.Peek(s.br.Buffered())
	pending = bytes.Clone(pending)
	fr := flate.NewReaderOpts(io.MultiReader(bytes.NewReader(pending), s.conn), flate.WithPartialBlock())
	s.br.Reset(fr)
	s.bw.Reset(&deflateWriter{w: connWriter{s}, dict: make([]byte, 0, deflateDict)})
	s.compressed = true
	s.log.Info("compress", "algorithm", "DEFLATE")
	return nil
}

// deflateWriter compresses each write into a sync-flushed run of DEFLATE
// blocks and writes it to w with one Write call.
type deflateWriter struct {
	w    io.Writer
	dict []byte // the last plaintext written, at most deflateDict octets
}

func (d *deflateWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+deflateChunk)]
		buf := deflateBufs.Get().(*bytes.Buffer)
		buf.Reset()
		// eof=false: the output ends with an empty stored block (sync
		// flush), byte-aligned, so the client can decode all of chunk.
		err := flate.StatelessDeflate(buf, chunk, false, d.dict)
		if err == nil {
			_, err = d.w.Write(buf.Bytes())
		}
		deflateBufs.Put(buf)
		if err != nil {
			return n, err
		}
		d.remember(chunk)
		n += len(chunk)
	}
	return n, nil
}

// remember keeps the last deflateDict octets of the plaintext sent.
func (d *deflateWriter) remember(p []byte) {
	if len(p) >= deflateDict {
		d.dict = append(d.dict[:0], p[len(p)-deflateDict:]...)
		return
	}
	if drop := len(d.dict) + len(p) - deflateDict; drop > 0 {
		d.dict = d.dict[:copy(d.dict, d.dict[drop:])]
	}
	d.dict = append(d.dict, p...)
}
