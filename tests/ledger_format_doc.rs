//! docs/ledger-format.md carries a worked example of two events. This test computes it from
//! the implementation's own functions and fails if the document differs by one byte.

use provenant::log::checkpoint::Checkpoint;
use provenant::log::envelope::{Digest, Unsigned, chain_hash, signing_message};
use provenant::log::keys::{LedgerKey, verify_strict};
use provenant::log::merkle::{Frontier, leaf_hash};
use serde_json::json;
use uuid::Uuid;

fn example() -> String {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key = LedgerKey::from_seed(seed);
    let genesis = Unsigned {
        actor: "system:bootstrap".into(),
        event_id: Uuid::parse_str("01900000-0000-7000-8000-000000000001").unwrap(),
        event_type: "LedgerInitialized".into(),
        key_id: key.id.clone(),
        payload: json!({
            "format_version": 1,
            "key_id": key.id,
            "ledger_id": "01900000-0000-7000-8000-000000000000",
            "origin": "provenant/01900000-0000-7000-8000-000000000000",
            "public_key": key.public_hex(),
        }),
        position: 0,
        prev_hash: Digest::ZERO,
        recorded_at: "2026-11-23T09:00:00.000000Z".into(),
        schema_version: 1,
        stream: "ledger".into(),
        stream_version: 0,
    };
    let c0 = genesis.canonical_bytes().unwrap();
    let h0 = chain_hash(&Digest::ZERO, &c0);
    let s0 = key.sign_events([&h0].into_iter(), None)[0];
    let second = Unsigned {
        actor: "user:alice".into(),
        event_id: Uuid::parse_str("01900000-0000-7000-8000-000000000002").unwrap(),
        event_type: "ProjectCreated".into(),
        key_id: key.id.clone(),
        payload: json!({"name": "Crédit scoring", "weight": 0.5, "tags": ["risk", "eu"]}),
        position: 1,
        prev_hash: h0,
        recorded_at: "2026-11-23T09:00:01.250000Z".into(),
        schema_version: 1,
        stream: "project-01900000-0000-7000-8000-0000000000aa".into(),
        stream_version: 0,
    };
    let c1 = second.canonical_bytes().unwrap();
    let h1 = chain_hash(&h0, &c1);
    let s1 = key.sign_events([&h1].into_iter(), None)[0];
    assert!(verify_strict(&key.public(), &signing_message(&h0), &s0));
    assert!(verify_strict(&key.public(), &signing_message(&h1), &s1));

    let mut f = Frontier::default();
    let (l0, l1) = (leaf_hash(&h0.0), leaf_hash(&h1.0));
    f.push(l0, |_, _, _| {});
    f.push(l1, |_, _, _| {});
    let note = Checkpoint {
        origin: "provenant/01900000-0000-7000-8000-000000000000".into(),
        size: 2,
        root: f.root(),
    }
    .sign(&key, None);

    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k}: {v}\n"));
    line("seed (secret key)", hex::encode(seed));
    line("public key", key.public_hex());
    line("key_id", key.id.clone());
    line(
        "event 0 canonical bytes (UTF-8)",
        String::from_utf8(c0.clone()).unwrap(),
    );
    line("event 0 canonical bytes (hex)", hex::encode(&c0));
    line(
        "event 0 hash = blake3(32 zero bytes ‖ canonical)",
        h0.to_hex(),
    );
    line(
        "event 0 signed message (hex)",
        hex::encode(signing_message(&h0)),
    );
    line("event 0 signature", hex::encode(s0));
    line(
        "event 1 canonical bytes (UTF-8)",
        String::from_utf8(c1.clone()).unwrap(),
    );
    line("event 1 canonical bytes (hex)", hex::encode(&c1));
    line(
        "event 1 hash = blake3(event 0 hash ‖ canonical)",
        h1.to_hex(),
    );
    line("event 1 signature", hex::encode(s1));
    line(
        "Merkle leaf 0 = SHA-256(00 ‖ event 0 hash)",
        hex::encode(l0),
    );
    line(
        "Merkle leaf 1 = SHA-256(00 ‖ event 1 hash)",
        hex::encode(l1),
    );
    line(
        "Merkle root, size 2 = SHA-256(01 ‖ leaf 0 ‖ leaf 1)",
        hex::encode(f.root()),
    );
    out.push_str("checkpoint note:\n");
    out.push_str(&note);
    out
}

#[test]
fn the_documented_example_is_what_the_code_computes() {
    let block = example();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/ledger-format.md"
    ))
    .unwrap();
    if !doc.contains(&format!("```text\n{block}```")) {
        panic!(
            "docs/ledger-format.md's worked example is out of date; it should read:\n```text\n{block}```"
        );
    }
}
