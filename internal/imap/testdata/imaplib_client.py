#!/usr/bin/env python3
"""Drives Letterbox's IMAP server with Python's imaplib (an independent
client). Usage: imaplib_client.py HOST PORT USER PASSWORD EXPECTED_FILE

EXPECTED_FILE holds the exact bytes of the only INBOX message. Prints one
line per checked step; exits non-zero on the first mismatch."""
import imaplib
import sys


def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)
    print("ok", what)


host, port, user, password, expected_file = sys.argv[1:6]
with open(expected_file, "rb") as f:
    expected = f.read()

m = imaplib.IMAP4(host, int(port))
check("IMAP4REV1" in m.capabilities and "IDLE" in m.capabilities, "capabilities")
typ, _ = m.login(user, password)
check(typ == "OK", "login")
typ, data = m.list()
check(typ == "OK" and any(b'"INBOX"' in d for d in data), "list")
typ, data = m.select("INBOX")
check(typ == "OK" and data == [b"1"], "select")
typ, data = m.fetch("1", "(RFC822)")
check(typ == "OK" and data[0][1] == expected, "fetch RFC822 byte-exact")
typ, data = m.fetch("1", "(FLAGS)")
check(typ == "OK" and b"\\Seen" in data[0], "fetch set \\Seen")
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(typ == "OK" and data[0][1] == b"Subject: imaplib test\r\n\r\n", "uid fetch header fields")
typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
check(typ == "OK" and b"\\Deleted" in data[0], "store")
typ, data = m.expunge()
check(typ == "OK" and data == [b"1"], "expunge")
typ, data = m.status("INBOX", "(MESSAGES UIDNEXT)")
check(typ == "OK" and data[0] == b'"INBOX" (MESSAGES 0 UIDNEXT 2)', "status")
typ, data = m.append("INBOX", "(\\Flagged)", None, expected)
check(typ == "OK" and b"APPENDUID" in data[0], "append")
typ, _ = m.logout()
check(typ == "BYE", "logout")
