package render

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/letterbox/letterbox/internal/message"
)

// binaryCTELine replaces the Content-Transfer-Encoding fields of a decoded
// part's header inside a BINARY section (RFC 3516 section 4.2); it is the
// line package message accounts for in Part.BinarySize.
const binaryCTELine = "Content-Transfer-Encoding: binary\r\n"

// decodes reports whether the Content-Transfer-Encoding cte is decoded for
// BINARY (quoted-printable or base64); unknown is true for encodings that
// cannot be decoded. Absent, 7bit, 8bit and binary are served as they are.
func decodes(cte message.NString) (decoded, unknown bool) {
	if !cte.Valid {
		return false, false
	}
	switch s := cte.S; {
	case strings.EqualFold(s, "7bit"), strings.EqualFold(s, "8bit"), strings.EqualFold(s, "binary"):
		return false, false
	case strings.EqualFold(s, "quoted-printable"), strings.EqualFold(s, "base64"):
		return true, false
	}
	return false, true
}

// binaryHeaderSize is the size of the header of the whole message in
// BINARY[]: its Content-Transfer-Encoding fields are replaced by
// binaryCTELine when they name quoted-printable or base64. Package message
// applies the same rule to the body parts inside a BINARY section (also to
// a multipart that claims such an encoding, whose body is not decoded).
func binaryHeaderSize(root *message.Part) (int64, error) {
	decoded, unknown := decodes(root.Encoding)
	switch {
	case unknown:
		return 0, ErrUnknownCTE
	case !decoded:
		return root.HeaderSize, nil
	}
	size := root.HeaderSize + int64(len(binaryCTELine))
	for _, f := range root.Header {
		if strings.EqualFold(f.Name, "Content-Transfer-Encoding") {
			size -= f.Size
		}
	}
	return size, nil
}

// binaryHeader returns the readers of the whole message's header in
// BINARY[] (see binaryHeaderSize).
func binaryHeader(root *message.Part, blob io.ReaderAt) []io.Reader {
	section := func(from, to int64) io.Reader { return io.NewSectionReader(blob, from, to-from) }
	if decoded, _ := decodes(root.Encoding); !decoded {
		return []io.Reader{section(root.Offset, root.BodyOffset())}
	}
	var rs []io.Reader
	from := root.Offset
	for _, f := range root.Header {
		if strings.EqualFold(f.Name, "Content-Transfer-Encoding") {
			rs = append(rs, section(from, f.Offset))
			from = f.Offset + f.Size
		}
	}
	end := root.Offset
	if n := len(root.Header); n > 0 {
		end = root.Header[n-1].Offset + root.Header[n-1].Size
	}
	return append(rs, section(from, end), strings.NewReader(binaryCTELine), section(end, root.BodyOffset()))
}

// binarySection returns BINARY[] (whole) or BINARY[part] of a validated
// tree.
func binarySection(root, part *message.Part, blob io.ReaderAt, whole bool) (io.ReaderAt, int64, error) {
	size, err := part.BinarySize()
	if err != nil {
		return nil, 0, err
	}
	if whole {
		h, err := binaryHeaderSize(root)
		if err != nil {
			return nil, 0, err
		}
		size += h
	}
	if size == 0 {
		return empty, 0, nil
	}
	open := func() (io.Reader, error) {
		body, err := part.BinaryReader(blob)
		if err != nil || !whole {
			return body, err
		}
		return io.MultiReader(append(binaryHeader(root, blob), body)...), nil
	}
	return &streamReaderAt{open: open, size: size}, size, nil
}

// errShortBinary is returned when decoding yields fewer bytes than the size
// computed at delivery (the blob changed, or a decoder bug).
var errShortBinary = errors.New("render: BINARY section shorter than its recorded size")

// streamReaderAt serves a stream of known size as an io.ReaderAt. Reads
// that continue where the previous one stopped (the normal case: copying
// the section into a literal) continue the stream; a read further on skips
// ahead, and a read before the current position restarts the stream with
// open. Calls are serialised.
type streamReaderAt struct {
	open func() (io.Reader, error)
	size int64

	mu  sync.Mutex
	r   io.Reader
	pos int64
}

func (s *streamReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("render: negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r == nil || off < s.pos {
		r, err := s.open()
		if err != nil {
			return 0, err
		}
		s.r, s.pos = r, 0
	}
	if off > s.pos {
		n, err := io.CopyN(io.Discard, s.r, off-s.pos)
		s.pos += n
		if err != nil {
			s.r = nil
			return 0, streamErr(err)
		}
	}
	want := p
	if rest := s.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n, err := io.ReadFull(s.r, want)
	s.pos += int64(n)
	if err != nil {
		s.r = nil
		return n, streamErr(err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func streamErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errShortBinary
	}
	return err
}
