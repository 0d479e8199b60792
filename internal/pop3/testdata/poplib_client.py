"""Drives Letterbox's POP3 server with Python's poplib (an independent
client) and reports what it saw as JSON on stdout; retrieved messages are
written byte-exact to OUTDIR/<n>.eml. Run by TestPythonPoplib.

usage: poplib_client.py HOST PORT USER PASSWORD OUTDIR
"""

import json
import os
import poplib
import sys


def main():
    host, port, user, password, outdir = sys.argv[1:6]
    p = poplib.POP3(host, int(port), timeout=20)
    out = {"welcome": p.getwelcome().decode()}
    out["capa"] = sorted(p.capa().keys())
    out["user"] = p.user(user).decode()
    out["pass"] = p.pass_(password).decode()
    count, size = p.stat()
    out["stat"] = [count, size]
    resp, listing, _ = p.list()
    out["list"] = [line.decode() for line in listing]
    sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
    resp, uidls, _ = p.uidl()
    out["uidl"] = [line.decode() for line in uidls]
    out["uidl_1"] = p.uidl(1).decode()
    out["retr"] = {}
    for n in range(1, count + 1):
        resp, lines, octets = p.retr(n)
        # poplib strips the line ends and the dot-stuffing; every line of a
        # POP3 response ends in CRLF.
        data = b"".join(line + b"\r\n" for line in lines)
        with open(os.path.join(outdir, "%d.eml" % n), "wb") as f:
            f.write(data)
        out["retr"][str(n)] = {
            "resp": resp.decode(),
            "octets": octets,
            "len": len(data),
            "listed": sizes[n],
        }
    resp, lines, _ = p.top(1, 0)
    out["top"] = [line.decode() for line in lines]
    out["dele"] = p.dele(1).decode()
    try:
        p.retr(1)
        out["retr_deleted"] = "no error"
    except poplib.error_proto as e:
        out["retr_deleted"] = e.args[0].decode()
    out["quit"] = p.quit().decode()
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
