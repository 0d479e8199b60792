#!/usr/bin/env python3
"""An independent SCRAM-SHA-256 client (RFC 5802, RFC 7677) over imaplib,
with hashlib/hmac only. Usage: scram_imaplib.py HOST PORT USER PASSWORD"""
import base64, hashlib, hmac, imaplib, os, sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
b64 = lambda b: base64.b64encode(b).decode()
HMAC = lambda key, msg: hmac.new(key, msg, hashlib.sha256).digest()


class Scram:
    def __init__(self, password):
        self.password, self.step, self.verified = password, 0, False
        self.nonce = b64(os.urandom(18))
        self.bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), self.nonce)

    def __call__(self, challenge):  # imaplib passes each decoded challenge
        self.step += 1
        if self.step == 1:  # client-first-message (no channel binding: "n,,")
            return ("n,," + self.bare).encode()
        if self.step == 2:  # server-first-message -> client-final-message
            server_first = challenge.decode()
            attrs = dict(a.split("=", 1) for a in server_first.split(","))
            assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce), "server nonce"
            salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = HMAC(salted, b"Client Key")
            without_proof = "c=%s,r=%s" % (b64(b"n,,"), attrs["r"])
            auth_message = ",".join((self.bare, server_first, without_proof)).encode()
            signature = HMAC(hashlib.sha256(client_key).digest(), auth_message)
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            self.server_signature = HMAC(HMAC(salted, b"Server Key"), auth_message)
            return (without_proof + ",p=" + b64(proof)).encode()
        # server-final-message: check the server knows the keys
        assert challenge.decode() == "v=" + b64(self.server_signature), "server signature"
        self.verified = True
        return b""


m = imaplib.IMAP4(host, port)
assert "AUTH=SCRAM-SHA-256" in m.capabilities, m.capabilities
print("ok capability AUTH=SCRAM-SHA-256")
try:
    m.authenticate("SCRAM-SHA-256", Scram("not the password"))
    sys.exit("wrong password accepted")
except imaplib.IMAP4.error as e:
    assert "[AUTHENTICATIONFAILED] Invalid credentials" in str(e), e
print("ok wrong password refused")
scram = Scram(password)
typ, _ = m.authenticate("SCRAM-SHA-256", scram)
assert typ == "OK" and scram.verified and m.state == "AUTH", (typ, scram.verified, m.state)
print("ok server signature verified")
typ, _ = m.select("INBOX")
assert typ == "OK", typ
print("ok select")
m.logout()
print("ok logout")
