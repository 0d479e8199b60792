#!/usr/bin/env python3
"""Send one message with Python's smtplib, an independent client, and print
what happened as JSON on stdout, for the Go tests in internal/smtp.

    send_message.py --port N [--lmtp] [--starttls CAFILE] --from ADDR
                    --to ADDR [--to ADDR ...] --subject S --body-file F

The message is built with email.message.EmailMessage and sent with
send_message (SMTP) or sendmail (LMTP, see below). The JSON has:

  features  the EHLO/LHLO keywords and parameters (after STARTTLS if any)
  refused   {rcpt: [code, text]} of recipients refused at RCPT
  replies   [[code, text], ...] after DATA: one for SMTP, one per accepted
            recipient for LMTP
  sent      base64 of the exact octets given to DATA (before dot-stuffing)
  error     {type, code, text} when smtplib raised
"""

import argparse
import base64
import email.generator
import email.message
import email.policy
import io
import json
import smtplib
import ssl
import sys


def flatten(msg, international):
    # What smtplib.send_message transmits (minus Bcc, which we never set).
    policy = msg.policy.clone(utf8=True) if international else msg.policy
    buf = io.BytesIO()
    email.generator.BytesGenerator(buf, policy=policy).flatten(msg, linesep="\r\n")
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--starttls", metavar="CAFILE")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--subject", default="test")
    p.add_argument("--body-file", required=True)
    a = p.parse_args()

    with open(a.body_file, "rb") as f:
        body = f.read().decode("utf-8")
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = a.sender
    msg["To"] = ", ".join(a.to)
    msg["Subject"] = a.subject
    msg["Message-ID"] = "<python-test@client.example>"
    msg.set_content(body)
    international = any(not s.isascii() for s in [a.sender] + a.to)

    out = {"features": {}, "refused": {}, "replies": []}
    cls = smtplib.LMTP if a.lmtp else smtplib.SMTP
    conn = cls(a.host, a.port, local_hostname="client.example", timeout=60)
    try:
        conn.ehlo()
        if a.starttls:
            ctx = ssl.create_default_context(cafile=a.starttls)
            conn.starttls(context=ctx)
            conn.ehlo()
            out["tls"] = conn.sock.version()
        out["features"] = dict(conn.esmtp_features)
        data = flatten(msg, international)
        out["sent"] = base64.b64encode(data if data.endswith(b"\r\n") else data + b"\r\n").decode()
        try:
            if a.lmtp:
                # smtplib.LMTP reads only the first reply after DATA (it is
                # SMTP's sendmail); the other per-recipient replies (RFC 2033
                # §4.2) are read here with getreply().
                opts = ["SMTPUTF8", "BODY=8BITMIME"] if international else []
                conn.ehlo_or_helo_if_needed()
                code, text = conn.mail(a.sender, opts)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, text, a.sender)
                accepted = []
                for r in a.to:
                    code, text = conn.rcpt(r)
                    if code in (250, 251):
                        accepted.append(r)
                    else:
                        out["refused"][r] = [code, text.decode()]
                if accepted:
                    code, text = conn.data(data)
                    out["replies"].append([code, text.decode()])
                    for _ in accepted[1:]:
                        code, text = conn.getreply()
                        out["replies"].append([code, text.decode()])
            else:
                # send_message hides the reply to DATA; record it on the way.
                data_cmd = conn.data

                def recording_data(m):
                    code, text = data_cmd(m)
                    out["replies"].append([code, text.decode()])
                    return code, text

                conn.data = recording_data
                refused = conn.send_message(msg)
                out["refused"] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
        except smtplib.SMTPRecipientsRefused as e:
            out["refused"] = {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}
            out["error"] = {"type": type(e).__name__}
        except smtplib.SMTPResponseException as e:
            out["error"] = {"type": type(e).__name__, "code": e.smtp_code, "text": e.smtp_error.decode()}
        conn.quit()
    finally:
        conn.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
