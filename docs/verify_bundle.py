#!/usr/bin/env python3
"""Checks a Provenant audit bundle from docs/audit-bundle.md alone, independently of Provenant's
own code. Needs `blake3` and `cryptography` (pip). Exit 0: intact; 1: not intact.

    python3 verify_bundle.py BUNDLE.zip [--key HEX]
"""
import base64
import hashlib
import json
import sys
import zipfile

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class NotIntact(Exception):
    pass


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def ed25519_ok(public, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except InvalidSignature:
        return False


def leaf(event_hash):
    return sha256(b"\x00", event_hash)


def node(left, right):
    return sha256(b"\x01", left, right)


def root_from_inclusion(index, size, leaf_hash, proof):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise NotIntact(f"index {index} is outside the tree of {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise NotIntact("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise NotIntact("the inclusion proof is too short")
    return r


def check_consistency(size1, size2, proof, root1, root2):
    """RFC 9162 section 2.1.4.2."""
    if size1 == size2:
        if proof or root1 != root2:
            raise NotIntact("equal sizes need an empty proof and equal roots")
        return
    if not proof:
        raise NotIntact("an empty consistency proof")
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise NotIntact("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != root1 or sr != root2:
        raise NotIntact("the log did not only grow since the previous head")


def checkpoint(note, public):
    """A C2SP signed note: body lines, a blank line, '— <name> <base64(key hash || sig)>'."""
    body, _, sigs = note.partition("\n\n")
    body += "\n"
    origin, size, root = body.splitlines()[:3]
    want = sha256(origin.encode(), b"\n\x01", public)[:4]
    for line in sigs.splitlines():
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        blob = base64.b64decode(blob)
        if name == origin and blob[:4] == want and ed25519_ok(public, body.encode(), blob[4:]):
            return origin, int(size), base64.b64decode(root)
    raise NotIntact("the checkpoint is not signed by the ledger key in effect")


def key_at(keys, position):
    for k in keys:
        if k["valid_from"] <= position and (k["valid_to"] is None or position < k["valid_to"]):
            return k
    raise NotIntact(f"no key covers position {position}")


def verify(path, trusted_hex=None):
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        lines = z.read("events.txt").decode("utf-8").splitlines()
    if manifest["format"] != "provenant-audit-bundle/1":
        raise NotIntact(f"unknown format {manifest['format']}")
    keys = manifest["keys"]
    for k in keys:
        public = bytes.fromhex(k["public_key"])
        if blake3.blake3(public).hexdigest()[:16] != k["key_id"]:
            raise NotIntact(f"key id {k['key_id']} does not match its key")
    size = manifest["tree_size"]
    head_key = bytes.fromhex(key_at(keys, size)["public_key"])
    origin, head_size, root = checkpoint(manifest["checkpoint"], head_key)
    if (origin, head_size) != (manifest["origin"], size):
        raise NotIntact("the checkpoint is not of the bundle's origin and size")
    previous = manifest.get("previous")
    if previous:
        old_key = bytes.fromhex(key_at(keys, previous["tree_size"])["public_key"])
        _, old_size, old_root = checkpoint(previous["checkpoint"], old_key)
        proof = [bytes.fromhex(h) for h in previous["consistency_proof"]]
        check_consistency(old_size, size, proof, old_root, root)
    ledger_events, last = [], -1
    for line in lines:
        position, hash_hex, sig_hex, proof_hex, canonical = line.split(" ", 4)
        position = int(position)
        if position <= last:
            raise NotIntact(f"event {position} is out of order")
        last = position
        event = json.loads(canonical)
        if event["position"] != position:
            raise NotIntact(f"event {position}: the line's position is not the event's")
        event_hash = blake3.blake3(bytes.fromhex(event["prev_hash"]) + canonical.encode("utf-8")).digest()
        if event_hash.hex() != hash_hex:
            raise NotIntact(f"event {position}: the hash does not recompute")
        key = key_at(keys, position)
        if event["key_id"] != key["key_id"]:
            raise NotIntact(f"event {position}: signed by a key not in effect at its position")
        message = b"provenant/event/v1" + event_hash
        if not ed25519_ok(bytes.fromhex(key["public_key"]), message, bytes.fromhex(sig_hex)):
            raise NotIntact(f"event {position}: the signature does not verify")
        proof = [] if proof_hex == "-" else [bytes.fromhex(h) for h in proof_hex.split(",")]
        if root_from_inclusion(position, size, leaf(event_hash), proof) != root:
            raise NotIntact(f"event {position}: the inclusion proof fails")
        if event["stream"] == "ledger":
            ledger_events.append(event)
    if len(lines) != manifest["events"]:
        raise NotIntact(f"the manifest lists {manifest['events']} events, the bundle holds {len(lines)}")
    # The keys are the ones the ledger's own events announce.
    if trusted_hex and keys[0]["public_key"] != trusted_hex.lower():
        raise NotIntact("the ledger's first key is not the trusted key")
    genesis = next((e for e in ledger_events if e["position"] == 0), None)
    if genesis is None or genesis["payload"]["public_key"] != keys[0]["public_key"]:
        raise NotIntact("the genesis event does not announce the first key")
    rotations = [e for e in ledger_events if e["event_type"] == "LedgerKeyRotated"]
    if len(rotations) + 1 != len(keys):
        raise NotIntact("the keys are not exactly those the ledger's events announce")
    for old, new, rotation in zip(keys, keys[1:], rotations):
        p = rotation["payload"]
        new_public = bytes.fromhex(new["public_key"])
        message = b"provenant/key-rotation/v1" + old["key_id"].encode() + new_public
        if (p["public_key"] != new["public_key"] or p["previous_key_id"] != old["key_id"]
                or rotation["position"] + 1 != new["valid_from"]
                or not ed25519_ok(new_public, message, bytes.fromhex(p["proof"]))):
            raise NotIntact(f"key {new['key_id']} is not announced by a valid rotation")
    return len(lines), size, root.hex()


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--key"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        events, size, root = verify(argv[1], argv[3] if len(argv) == 4 else None)
    except (NotIntact, KeyError, ValueError) as e:
        print(f"NOT INTACT: {e}")
        return 1
    print(f"intact: {events} events proven against the signed tree head of size {size} (root {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
