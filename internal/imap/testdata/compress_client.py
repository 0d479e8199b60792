"""IMAP COMPRESS=DEFLATE client for compress_test.go (RFC 4978).

Usage: compress_client.py HOST PORT USER PASSWORD FLUSH LEVEL LITERAL_OUT

Logs in, sends COMPRESS DEFLATE, then runs commands over the compressed
connection. Each command (and each piece of an APPEND literal) is
compressed with zlib at LEVEL (raw deflate, wbits=-15) and flushed with the
zlib flush mode named FLUSH (Z_PARTIAL_FLUSH, Z_SYNC_FLUSH, Z_FULL_FLUSH):
zlib's partial flush is what isync/mbsync uses, and Go's compress/flate
cannot produce it.

Everything the server says after COMPRESS is printed, decompressed, one
line per server line as "S: <line>"; commands as "C: <line>". The literal
of the first FETCH is written to LITERAL_OUT instead of stdout (the test
compares it byte-exact). After "S: + idling" the script waits for the test
to deliver a message; the test reads stdout as it comes. The socket has a
timeout, so a response the server holds back ends the script with an error
instead of hanging.
"""

import re
import socket
import sys
import zlib

host, port, user, password, mode, level, literal_out = sys.argv[1:8]
FLUSH = getattr(zlib, mode)
LEVEL = int(level)


class Conn:
    def __init__(self):
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.buf = b""
        self.comp = None
        self.decomp = None

    def start_compression(self):
        # RFC 4978 §3: the server compresses from the octet after the
        # tagged OK; it sent nothing after it.
        if self.buf:
            raise SystemExit("data after COMPRESS OK: %r" % self.buf)
        self.comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self.decomp = zlib.decompressobj(-15)

    def send(self, data):
        if self.comp is not None:
            data = self.comp.compress(data) + self.comp.flush(FLUSH)
        self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        if self.decomp is not None:
            data = self.decomp.decompress(data)
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def eof(self):
        try:
            self.fill()
        except EOFError:
            return self.buf == b""
        return False


def out(prefix, line):
    print(prefix + line.decode("utf-8", "backslashreplace"), flush=True)


c = Conn()


def command(tag, text, literal_to=None):
    """Sends tag+text and prints the responses up to the tagged one."""
    c.send(tag + b" " + text + b"\r\n")
    out("C: ", tag + b" " + text)
    return responses(tag, literal_to)


def responses(tag, literal_to=None):
    lines = []
    while True:
        line = c.line()
        m = re.search(rb"\{(\d+)\}$", line)
        if m:
            data = c.read(int(m.group(1)))
            if literal_to is not None:
                with open(literal_to, "wb") as f:
                    f.write(data)
                line += b"<literal written>"
            else:
                line += b"<literal " + data + b">"
            line += c.line()
        out("S: ", line)
        lines.append(line)
        if line.startswith(tag + b" "):
            return lines


# Uncompressed: greeting, LOGIN (its OK carries the capabilities), COMPRESS.
c.line()  # greeting
login = command(b"a", b"LOGIN " + user.encode() + b' "' + password.encode() + b'"')
if b" COMPRESS=DEFLATE" not in login[-1]:
    raise SystemExit("COMPRESS=DEFLATE not advertised after login")
command(b"b", b"COMPRESS DEFLATE")
c.start_compression()

command(b"c", b"SELECT INBOX")
command(b"d", b"FETCH 1 BODY.PEEK[]", literal_to=literal_out)

# Two pipelined commands in one flush.
c.send(b"e1 NOOP\r\ne2 CHECK\r\n")
out("C: ", b"e1 NOOP")
out("C: ", b"e2 CHECK")
responses(b"e1")
responses(b"e2")

# A synchronising literal (no LITERAL+): the continuation request must reach
# the client while it waits; the literal is sent in several flushed pieces.
msg = b"From: py@example.org\r\nSubject: compressed append\r\n\r\n" + b"".join(
    b"line %05d of the appended message, \xc3\xa4\xc3\xb6\xc3\xbc\r\n" % i for i in range(3000))
c.send(b"f APPEND INBOX {%d}\r\n" % len(msg))
out("C: ", b"f APPEND INBOX {%d}" % len(msg))
out("S: ", c.line())
step = len(msg) // 3 + 1
for i in range(0, len(msg), step):
    c.send(msg[i:i + step])
c.send(b"\r\n")
responses(b"f")
command(b"g", b"FETCH 3 BODY.PEEK[]", literal_to=literal_out + ".append")
with open(literal_out + ".append", "rb") as f:
    print("append round trip:", "byte-exact" if f.read() == msg else "DIFFERENT", flush=True)

# IDLE: the test delivers a message once it has read "S: + idling".
c.send(b"h IDLE\r\n")
out("C: ", b"h IDLE")
out("S: ", c.line())
out("S: ", c.line())
c.send(b"DONE\r\n")
out("C: ", b"DONE")
responses(b"h")

command(b"i", b"LOGOUT")
print("eof" if c.eof() else "no eof", flush=True)
