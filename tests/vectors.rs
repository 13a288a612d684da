//! Public test vectors: RFC 6962 proofs (transparency-dev/merkle) and Ed25519 edge cases
//! (C2SP CCTV). Copied from ../shared/testdata into tests/data so a bare clone runs them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use provenant::log::keys;
use provenant::log::merkle::{
    Node, verify_consistency, verify_inclusion, verify_subtree_consistency,
    verify_subtree_inclusion,
};
use serde_json::Value;

fn data(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(kind)
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(json_files(&p));
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Decodes a hash. Some vectors use short placeholder strings ("don't care") where only
/// equality matters; those map injectively to 32 bytes that no real node hash can equal.
fn node(v: &Value) -> Option<Node> {
    let bytes = B64.decode(v.as_str()?).ok()?;
    Some(match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(n) => n,
        Err(_) => *blake3::hash(&[b"placeholder:".as_slice(), &bytes].concat()).as_bytes(),
    })
}

/// A leaf hash must really be 32 bytes.
fn leaf(v: &Value) -> Option<Node> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

fn proof(v: &Value) -> Option<Vec<Node>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(items) => items.iter().map(node).collect(),
        _ => None,
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a u64 in {v}"))
}

/// Runs every vector of `kind`; `check` returns whether the proof verified.
fn run(kind: &str, check: impl Fn(&Value) -> bool) -> usize {
    let files = json_files(&data(kind));
    assert!(
        files.len() > 20,
        "{kind}: only {} vectors found",
        files.len()
    );
    let mut wrong = Vec::new();
    for f in &files {
        let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        if check(&v) == want_err {
            wrong.push(format!("{} (wantErr {want_err})", f.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} vectors disagree:\n{}",
        wrong.len(),
        files.len(),
        wrong.join("\n")
    );
    files.len()
}

#[test]
fn rfc6962_inclusion_vectors() {
    run("rfc6962/inclusion", |v| {
        let (Some(leaf_hash), Some(root), Some(p)) =
            (leaf(&v["leafHash"]), node(&v["root"]), proof(&v["proof"]))
        else {
            return false;
        };
        verify_inclusion(num(v, "leafIdx"), num(v, "treeSize"), &leaf_hash, &p, &root).is_ok()
    });
}

#[test]
fn rfc6962_consistency_vectors() {
    run("rfc6962/consistency", |v| {
        let (Some(r1), Some(r2), Some(p)) =
            (node(&v["root1"]), node(&v["root2"]), proof(&v["proof"]))
        else {
            return false;
        };
        verify_consistency(num(v, "size1"), num(v, "size2"), &p, &r1, &r2).is_ok()
    });
}

#[test]
fn subtree_inclusion_vectors() {
    run("rfc6962/subtreeinclusion", |v| {
        let (Some(leaf_hash), Some(root), Some(p)) =
            (leaf(&v["leafHash"]), node(&v["root"]), proof(&v["proof"]))
        else {
            return false;
        };
        verify_subtree_inclusion(
            num(v, "leafIdx"),
            num(v, "start"),
            num(v, "end"),
            &leaf_hash,
            &p,
            &root,
        )
        .is_ok()
    });
}

#[test]
fn subtree_consistency_vectors() {
    run("rfc6962/subtreeconsistency", |v| {
        let (Some(r1), Some(r2), Some(p)) =
            (node(&v["root1"]), node(&v["root2"]), proof(&v["proof"]))
        else {
            return false;
        };
        verify_subtree_consistency(num(v, "start"), num(v, "end"), num(v, "size"), &p, &r1, &r2)
            .is_ok()
    });
}

/// Our signature check (`verify_strict`) accepts a CCTV vector exactly when its only flags
/// are `low_order_component_A` / `low_order_component_R`; every vector with a low-order or
/// non-canonical A or R, or a low-order residue, is rejected. docs/ledger-format.md lists this.
#[test]
fn ed25519_cctv_vectors_follow_verify_strict() {
    let text = std::fs::read_to_string(data("ed25519-cctv/ed25519vectors.json")).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() > 100);
    let mut accepted = 0;
    for v in &vectors {
        let flags: Vec<&str> = v["flags"]
            .as_array()
            .map_or(vec![], |f| f.iter().filter_map(|x| x.as_str()).collect());
        let expect = flags
            .iter()
            .all(|f| *f == "low_order_component_A" || *f == "low_order_component_R");
        let mut sig = [0u8; 64];
        hex::decode_to_slice(v["sig"].as_str().unwrap(), &mut sig).unwrap();
        let got = keys::parse_public(v["key"].as_str().unwrap())
            .is_some_and(|k| keys::verify_strict(&k, v["msg"].as_str().unwrap().as_bytes(), &sig));
        assert_eq!(got, expect, "vector {} with flags {flags:?}", v["number"]);
        accepted += usize::from(got);
    }
    assert!(accepted > 0, "some vectors must be accepted");
}
