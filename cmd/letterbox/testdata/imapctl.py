#!/usr/bin/env python3
"""Independent IMAP client for the end-to-end tests (Python's imaplib).

usage: imapctl.py HOST PORT USER PASS OP...

Each OP is a JSON array, run in order on one session:
  ["dump", MAILBOX...]          print {"MAILBOX": [{"uid", "flags", "body"}]}
                                (body base64, flags sorted, ordered by UID)
  ["store", MAILBOX, UID, ITEM, FLAGS]   UID STORE UID ITEM FLAGS
  ["expunge", MAILBOX, UID]     flag UID \\Deleted and UID EXPUNGE it
  ["append", MAILBOX, FLAGS, BODY_BASE64]
  ["create", MAILBOX]
Prints one JSON object per dump on stdout; any failure exits non-zero.
"""
import base64
import imaplib
import json
import re
import sys


def check(typ, data, what):
    if typ != "OK":
        sys.exit("%s: %s %r" % (what, typ, data))
    return data


def select(m, box):
    check(*m.select('"%s"' % box), "select " + box)


def dump(m, boxes):
    out = {}
    for box in boxes:
        select(m, box)
        msgs = []
        typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        check(typ, data, "fetch " + box)
        for i, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            head, body = item
            # Items after the literal (e.g. FLAGS) come in the next element.
            if i + 1 < len(data) and isinstance(data[i + 1], bytes):
                head += data[i + 1]
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()
            msgs.append({"uid": uid, "flags": sorted(flags), "body": base64.b64encode(body).decode()})
        msgs.sort(key=lambda x: x["uid"])
        out[box] = msgs
        check(*m.unselect(), "unselect")
    print(json.dumps(out), flush=True)


def main():
    host, port, user, password = sys.argv[1:5]
    m = imaplib.IMAP4(host, int(port))
    check(*m.login(user, password), "login")
    for raw in sys.argv[5:]:
        op = json.loads(raw)
        if op[0] == "dump":
            dump(m, op[1:])
        elif op[0] == "store":
            select(m, op[1])
            check(*m.uid("STORE", str(op[2]), op[3], op[4]), "store")
            m.unselect()
        elif op[0] == "expunge":
            select(m, op[1])
            check(*m.uid("STORE", str(op[2]), "+FLAGS.SILENT", "(\\Deleted)"), "store deleted")
            check(*m.uid("EXPUNGE", str(op[2])), "uid expunge")
            m.unselect()
        elif op[0] == "append":
            check(*m.append('"%s"' % op[1], op[2] or None, None, base64.b64decode(op[3])), "append")
        elif op[0] == "create":
            check(*m.create('"%s"' % op[1]), "create")
        else:
            sys.exit("unknown op %r" % op)
    m.logout()


if __name__ == "__main__":
    main()
