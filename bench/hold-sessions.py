#!/usr/bin/env python3
"""Log N sessions in to an iSCSI target (no authentication) and hold them open until
stdin closes. Used by engine-vs-tgt.sh to measure a target's memory with many
sessions logged in. Prints "N sessions logged in" once they all are.

    hold-sessions.py HOST PORT TARGET-IQN N
"""
import socket
import struct
import sys


def login(host, port, target, isid):
    s = socket.create_connection((host, port), timeout=10)
    text = (f"InitiatorName=iqn.2026-11.io.isctl:hold-{isid}\0SessionType=Normal\0"
            f"TargetName={target}\0AuthMethod=None\0HeaderDigest=None\0DataDigest=None\0"
            "MaxRecvDataSegmentLength=262144\0").encode()
    bhs = bytearray(48)
    bhs[0] = 0x43                     # Login Request, immediate
    bhs[1] = 0x80 | 0x03              # T, CSG=security, NSG=full feature
    bhs[5:8] = len(text).to_bytes(3, "big")
    bhs[8:14] = bytes([0x80, 0, 0, 0]) + isid.to_bytes(2, "big")
    struct.pack_into(">I", bhs, 16, 1)  # ITT
    struct.pack_into(">I", bhs, 24, 1)  # CmdSN
    s.sendall(bytes(bhs) + text + b"\0" * ((4 - len(text) % 4) % 4))
    hdr = b""
    while len(hdr) < 48:
        chunk = s.recv(48 - len(hdr))
        if not chunk:
            raise SystemExit(f"session {isid}: connection closed during login")
        hdr += chunk
    if hdr[36] != 0:
        raise SystemExit(f"session {isid}: login failed, status {hdr[36]:#04x}{hdr[37]:02x}")
    # A target may answer with one login response that does not transit yet (e.g.
    # tgt when it wants more keys): accept either; the session counts once logged in.
    return s


def main():
    host, port, target, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    held = [login(host, port, target, i + 1) for i in range(n)]
    print(f"{len(held)} sessions logged in", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
