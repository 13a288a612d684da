//! The typed table: how a run's inputs are stored and hashed. It holds the tensors the
//! session was fed, one per ONNX input, row-major and little-endian, behind a header that
//! names the schema's columns and where each lies, so the rows can be read back without the
//! model. Writing it copies the parsed values; writing the request's text anew as canonical
//! JSON and compressing that cost a recorded 1000-row request about as much as parsing and
//! scoring it (docs/scoring.md, "The record of every prediction", has the layout).
//!
//! Runs recorded before it have canonical JSON input blobs; `read` takes either, told apart
//! by the first bytes (JSON starts with `{`).

use serde::{Deserialize, Serialize};

use super::cells::Cells;
use super::scorer::Values;

/// The first bytes of a typed table.
pub const MAGIC: &[u8] = b"PVTT1\n";

#[derive(Debug, thiserror::Error)]
#[error("not a stored table: {0}")]
pub struct BadTable(String);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    fields: Vec<String>,
    inputs: Vec<Input>,
    rows: u64,
}

/// One ONNX input: its name, element type and the schema columns it holds, in its order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    columns: Vec<usize>,
    name: String,
    #[serde(rename = "type")]
    element: String,
}

/// A run's inputs as stored: `fields` in schema order, `rows` rows, and per ONNX input its
/// name, the schema columns it holds and their values.
pub(super) fn write(fields: &[&str], rows: usize, inputs: &[(&str, &[usize], &Values)]) -> Vec<u8> {
    let header = Header {
        fields: fields.iter().map(|f| f.to_string()).collect(),
        inputs: inputs
            .iter()
            .map(|(name, columns, values)| Input {
                columns: columns.to_vec(),
                name: name.to_string(),
                element: values.type_name().to_string(),
            })
            .collect(),
        rows: rows as u64,
    };
    // Keys are in order and names are plain strings, so this is the canonical JSON a reader
    // would write; `tests::headers_are_canonical_json` holds it to that.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let body: usize = inputs.iter().map(|(_, _, v)| v.byte_len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + body);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, values) in inputs {
        values.write_le(&mut out);
    }
    out
}

/// A stored table's fields and rows: a typed table's cells as text that parses back to the
/// values it holds, or a canonical JSON table's as they are.
pub fn read(bytes: &[u8]) -> Result<(Vec<String>, Cells), BadTable> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        #[derive(Deserialize)]
        struct Json {
            fields: Vec<String>,
            rows: Cells,
        }
        let t: Json = serde_json::from_slice(bytes).map_err(|e| BadTable(e.to_string()))?;
        return Ok((t.fields, t.rows));
    };
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| BadTable("the header's length is cut".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    let (header, mut body) = rest
        .split_at_checked(len)
        .ok_or_else(|| BadTable("the header is cut".into()))?;
    let header: Header =
        serde_json::from_slice(header).map_err(|e| BadTable(format!("header: {e}")))?;
    let rows = usize::try_from(header.rows).map_err(|_| BadTable("too many rows".into()))?;
    // Where each field's cells lie: (input, position in its row, the input's width).
    let mut at = vec![None; header.fields.len()];
    let mut values = Vec::with_capacity(header.inputs.len());
    for (i, input) in header.inputs.iter().enumerate() {
        let width = input.columns.len();
        for (k, &c) in input.columns.iter().enumerate() {
            match at.get_mut(c) {
                Some(slot @ None) => *slot = Some((i, k, width)),
                _ => {
                    return Err(BadTable(format!(
                        "input {:?} names column {c} again or out of range",
                        input.name
                    )));
                }
            }
        }
        let n = rows
            .checked_mul(width)
            .ok_or_else(|| BadTable("too many values".into()))?;
        values.push(
            Values::read_le(&input.element, n, &mut body)
                .map_err(|e| BadTable(format!("input {:?}: {e}", input.name)))?,
        );
    }
    if !body.is_empty() {
        return Err(BadTable(format!(
            "{} bytes after the last input",
            body.len()
        )));
    }
    let at: Vec<(usize, usize, usize)> = at
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| BadTable("a field is in no input".into()))?;
    let mut cells = Cells::with_capacity(at.len(), rows, rows * at.len() * 10);
    let mut floats = ryu_js::Buffer::new();
    for r in 0..rows {
        for &(i, k, width) in &at {
            values[i].push_exact(r * width + k, &mut cells, &mut floats);
        }
        cells.end_row();
    }
    Ok((header.fields, cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Values, Values, Values) {
        let floats = Values::F32(vec![
            1.5,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 8.0,
            f32::MAX,
            14.23,
            0.1,
        ]);
        let names = Values::Str(vec![
            "a,\"b\"".into(),
            " x ".into(),
            "".into(),
            "é".into(),
            "z".into(),
        ]);
        let flags = Values::Bool(vec![true, false, true, false, true]);
        (floats, names, flags)
    }

    #[test]
    fn cells_read_back_parse_to_the_very_values_written() {
        let (floats, names, flags) = sample();
        // Fields: f0, s, f1, b; the float input holds f0 and f1 (width 2), 5 rows.
        let bytes = write(
            &["f0", "s", "f1", "b"],
            5,
            &[
                ("floats", &[0, 2], &floats),
                ("names", &[1], &names),
                ("flags", &[3], &flags),
            ],
        );
        let (fields, cells) = read(&bytes).unwrap();
        assert_eq!(fields, ["f0", "s", "f1", "b"]);
        assert_eq!(cells.len(), 5);
        let Values::F32(want) = &floats else {
            unreachable!()
        };
        for r in 0..5 {
            for (c, k) in [(0, 0), (2, 1)] {
                let got: f32 = cells.cell(r, c).parse().unwrap();
                assert_eq!(
                    got.to_bits(),
                    want[r * 2 + k].to_bits(),
                    "row {r} {:?}",
                    cells.cell(r, c)
                );
            }
        }
        assert_eq!(cells.cell(0, 1), "a,\"b\"");
        assert_eq!(cells.cell(1, 1), " x ");
        assert_eq!(cells.cell(2, 3), "true");
        assert_eq!(cells.cell(0, 0), "1.5");
        assert_eq!(cells.cell(0, 2), "-0");
    }

    #[test]
    fn headers_are_canonical_json() {
        let (floats, ..) = sample();
        let bytes = write(&["b", "a\u{7f}é"], 5, &[("in\"put", &[1, 0], &floats)]);
        let len = u32::from_le_bytes(bytes[MAGIC.len()..MAGIC.len() + 4].try_into().unwrap());
        let header = &bytes[MAGIC.len() + 4..MAGIC.len() + 4 + len as usize];
        let value: serde_json::Value = serde_json::from_slice(header).unwrap();
        assert_eq!(crate::log::canonical::to_vec(&value).unwrap(), header);
    }

    #[test]
    fn canonical_json_tables_are_read_as_they_are() {
        let (fields, cells) = read(br#"{"fields":["a"],"rows":[["1.50"],[""]]}"#).unwrap();
        assert_eq!(
            (fields[0].as_str(), cells.cell(0, 0), cells.cell(1, 0)),
            ("a", "1.50", "")
        );
    }

    #[test]
    fn damaged_tables_are_refused_not_misread() {
        let (floats, ..) = sample();
        let bytes = write(&["x", "y"], 5, &[("in", &[0, 1], &floats)]);
        let header_end =
            MAGIC.len() + 4 + u32::from_le_bytes(bytes[6..10].try_into().unwrap()) as usize;
        for (what, cut) in [
            ("one byte short", bytes[..bytes.len() - 1].to_vec()),
            ("one byte more", [bytes.as_slice(), &[0]].concat()),
            ("no body", bytes[..header_end].to_vec()),
            ("cut in the header", bytes[..12].to_vec()),
            ("cut in the length", bytes[..8].to_vec()),
        ] {
            assert!(read(&cut).is_err(), "{what}");
        }
        let twice = write(&["x", "y"], 5, &[("in", &[0, 0], &floats)]);
        assert!(read(&twice).unwrap_err().to_string().contains("again"));
        let missing = write(&["x", "y", "z"], 5, &[("in", &[0, 1], &floats)]);
        assert!(read(&missing).unwrap_err().to_string().contains("no input"));
        // A header claiming more rows than the body holds is refused before any allocation.
        let mut huge = bytes.clone();
        let text = String::from_utf8(bytes[10..header_end].to_vec()).unwrap();
        let swollen = text.replace("\"rows\":5", "\"rows\":5000000000000");
        huge.splice(
            6..header_end,
            [
                (swollen.len() as u32).to_le_bytes().to_vec(),
                swollen.into_bytes(),
            ]
            .concat(),
        );
        assert!(read(&huge).is_err());
    }
}
