//! RFC 8785 (JCS) canonical JSON.
//!
//! The chain hashes these bytes, so an independent verifier in any language must be able
//! to produce them from the parsed JSON alone. Object keys sort by UTF-16 code units,
//! strings escape only what ECMAScript's `JSON.stringify` escapes, and numbers print as
//! ECMAScript prints an IEEE-754 double.

use serde_json::Value;

/// Largest integer magnitude that survives the round trip through an IEEE-754 double.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CanonicalError {
    #[error(
        "integer {0} at {1} is outside the exactly representable range ±(2^53-1); send it as a string"
    )]
    UnsafeInteger(String, String),
}

/// Appends the canonical form of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), CanonicalError> {
    write_at(out, value, &mut String::from("$"))
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_at(out: &mut Vec<u8>, value: &Value, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n, path)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write_at(out, item, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                let len = path.len();
                path.push('.');
                path.push_str(key);
                write_at(out, item, path)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(
    out: &mut Vec<u8>,
    n: &serde_json::Number,
    path: &str,
) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(
                u.to_string(),
                path.to_string(),
            ));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(
                i.to_string(),
                path.to_string(),
            ));
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        // serde_json never holds NaN or infinities, so ECMAScript formatting always applies.
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(f).as_bytes());
    }
    Ok(())
}

/// Writes a JSON string the way `JSON.stringify` does (RFC 8785 §3.2.2.2).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        // Most strings (every number cell) need no escape: one copy.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether JSON needs an escape for this byte: a control character, `"` or `\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte is `escaped`, eight bytes at a time: a scored run's record writes every
/// cell of its inputs through here.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `v` is below `n` (n <= 0x80): no byte below `n`
    // means no borrow crosses bytes, and a byte that keeps its high bit had it already.
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS;
    let word = |v: u64| below(v, 0x20) | below(v ^ (ONES * 0x22), 1) | below(v ^ (ONES * 0x5c), 1);
    let load = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    if bytes.len() < 8 {
        return bytes.iter().copied().any(escaped);
    }
    let mut hit = 0;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        hit |= word(load(at));
        at += 8;
    }
    // The last eight bytes, overlapping what was read: a test of "any" may read twice.
    hit |= word(load(bytes.len() - 8));
    hit != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_by_utf16_code_units() {
        // RFC 8785 §3.2.3's example: U+1F600 (surrogates D83D DE00) sorts before U+FB33.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2, "\r": 3, "1": 4, "\u{80}": 5, "\u{f6}": 6});
        assert_eq!(
            canon(v),
            "{\"\\r\":3,\"1\":4,\"\u{80}\":5,\"\u{f6}\":6,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn numbers_print_as_ecmascript() {
        let v: Value = serde_json::from_str(
            "[333333333.33333329, 1E30, 4.50, 2e-3, 0.000001, 1e-7, -0.0, 10.0, 9007199254740991]",
        )
        .unwrap();
        assert_eq!(
            canon(v),
            "[333333333.3333333,1e+30,4.5,0.002,0.000001,1e-7,0,10,9007199254740991]"
        );
    }

    #[test]
    fn rejects_integers_beyond_two_to_the_53() {
        let err = to_vec(&json!({"a": [1, 9007199254740992u64]})).unwrap_err();
        assert_eq!(
            err,
            CanonicalError::UnsafeInteger("9007199254740992".into(), "$.a[1]".into())
        );
        assert!(to_vec(&json!(-9007199254740992i64)).is_err());
    }

    #[test]
    fn escapes_only_what_json_stringify_escapes() {
        let v = json!("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}é€");
        assert_eq!(
            canon(v),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/\u{7f}é€\""
        );
    }

    #[test]
    fn the_word_scan_finds_exactly_the_bytes_to_escape() {
        let naive = |b: &[u8]| b.iter().copied().any(escaped);
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut bytes = vec![b'7'; len];
                    bytes[at] = c;
                    assert_eq!(
                        needs_escape(&bytes),
                        naive(&bytes),
                        "{c:#x} at {at} of {len}"
                    );
                }
            }
        }
        // Neighbours cannot lend a borrow to a byte that needs nothing.
        for a in 0..=255u8 {
            for c in 0..=255u8 {
                let bytes = [b'x', b'x', b'x', a, c, b'x', b'x', b'x', a];
                assert_eq!(needs_escape(&bytes), naive(&bytes), "{a:#x} {c:#x}");
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("0.2800000011920929 é€\u{7f}".as_bytes()));
    }

    #[test]
    fn nested_structures_have_no_whitespace() {
        let v = json!({"b": [true, false, null, {"z": 1, "a": "x"}], "a": {}});
        assert_eq!(
            canon(v),
            "{\"a\":{},\"b\":[true,false,null,{\"a\":\"x\",\"z\":1}]}"
        );
    }
}
