//! The artifact processor: reads an uploaded artifact and says what model it holds, its
//! schema, and whether our runtime can execute it.

use std::collections::BTreeMap;
use std::io::Read;

use ort::value::{TensorElementType, ValueType};
use serde::Deserialize;
use serde_json::{Value, json};

use super::onnx::{self, Onnx};
use crate::blobs::{BlobError, BlobStore};
use crate::domain::event::Ingestion;
use crate::domain::schema::{Column, ColumnType};
use crate::log::envelope::Digest;

/// The model type of every artifact our scorer executes.
pub const ONNX_MODEL_TYPE: &str = "onnx";

/// Reads the stored artifact `blob` of `artifact_type`. Findings that make it undeployable
/// are part of the result, not errors: the artifact is kept and the reason recorded. The
/// ONNX model inside an MLflow zip is stored as a blob of its own so the scorer can load it
/// by hash.
pub fn ingest(
    onnx: &Onnx,
    blobs: &BlobStore,
    artifact_type: &str,
    blob: &Digest,
) -> Result<Ingestion, BlobError> {
    Ok(match artifact_type {
        "onnx" => onnx_model(onnx, blob.to_hex(), &blobs.get(blob)?),
        "python/mlflow" => mlflow(onnx, blobs, &blobs.get(blob)?).unwrap_or_else(|reason| {
            not_deployable("python/mlflow", format!("MLflow model: {reason}"))
        }),
        other => not_deployable(
            other,
            format!(
                "no runtime in this installation executes {other:?} artifacts; only onnx and python/mlflow (onnx flavor) are deployable"
            ),
        ),
    })
}

fn not_deployable(model_type: &str, reason: String) -> Ingestion {
    Ingestion {
        model_type: model_type.to_string(),
        deployable: false,
        reason: Some(reason),
        model_blob: None,
        input_schema: None,
        output_schema: None,
        details: BTreeMap::new(),
    }
}

fn onnx_model(onnx: &Onnx, hash: String, bytes: &[u8]) -> Ingestion {
    let info = match onnx::inspect(onnx, bytes) {
        Ok(info) => info,
        Err(e) => {
            return not_deployable(
                ONNX_MODEL_TYPE,
                format!(
                    "ONNX Runtime {} could not load the model: {e}",
                    onnx.version
                ),
            );
        }
    };
    let mut details = BTreeMap::new();
    details.insert("ort_version".into(), json!(onnx.version));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            details.insert(k.to_string(), v);
        }
    };
    put("producer", info.producer.map(Value::from));
    put("graph_name", info.graph_name.map(Value::from));
    put("domain", info.domain.map(Value::from));
    put("model_version", info.model_version.map(Value::from));
    if !info.custom.is_empty() {
        put("metadata_props", Some(json!(info.custom)));
    }
    if let Some(facts) = onnx::proto_facts(bytes) {
        put("ir_version", facts.ir_version.map(Value::from));
        put("producer_version", facts.producer_version.map(Value::from));
        put("opsets", Some(json!(facts.opsets)));
    }
    let signature = |list: &[(String, ValueType)]| {
        list.iter()
            .map(|(n, t)| json!({"name": n, "type": t.to_string()}))
            .collect::<Vec<_>>()
    };
    put("inputs", Some(json!(signature(&info.inputs))));
    put("outputs", Some(json!(signature(&info.outputs))));

    let schema = columns("input", &info.inputs)
        .and_then(|input| columns("output", &info.outputs).map(|output| (input, output)));
    match schema {
        Ok((input, output)) => Ingestion {
            model_type: ONNX_MODEL_TYPE.into(),
            deployable: true,
            reason: None,
            model_blob: Some(hash),
            input_schema: Some(input),
            output_schema: Some(output),
            details,
        },
        Err(reason) => Ingestion {
            details,
            model_blob: Some(hash),
            ..not_deployable(ONNX_MODEL_TYPE, reason)
        },
    }
}

/// One column per tensor of shape `[N]` or `[N, 1]`; `name.i` columns for `[N, k]`.
fn columns(side: &str, list: &[(String, ValueType)]) -> Result<Vec<Column>, String> {
    let mut out = Vec::new();
    for (name, ty) in list {
        let ValueType::Tensor { ty, shape, .. } = ty else {
            return Err(format!(
                "{side} {name:?} is a {ty}, not a tensor (classifiers must be converted with zipmap disabled)"
            ));
        };
        let column_type = column_type(*ty).ok_or_else(|| {
            format!("{side} {name:?} has element type {ty}, which the schema cannot express")
        })?;
        let width = match &shape[..] {
            [_] => 1,
            [_, k] if *k >= 1 => *k,
            _ => {
                return Err(format!(
                    "{side} {name:?} has shape {shape:?}; expected [N], [N, 1] or [N, k] with a fixed k"
                ));
            }
        };
        if width == 1 {
            out.push(Column {
                name: name.clone(),
                column_type,
            });
        } else {
            out.extend((0..width).map(|i| Column {
                name: format!("{name}.{i}"),
                column_type,
            }));
        }
    }
    Ok(out)
}

/// The schema type of an ONNX element type.
pub fn column_type(t: TensorElementType) -> Option<ColumnType> {
    use TensorElementType as T;
    Some(match t {
        T::Float32 | T::Float16 | T::Bfloat16 => ColumnType::Float32,
        T::Float64 => ColumnType::Float64,
        T::Int8 | T::Int16 | T::Int32 | T::Uint8 | T::Uint16 => ColumnType::Int32,
        T::Int64 | T::Uint32 => ColumnType::Int64,
        T::Bool => ColumnType::Boolean,
        T::String => ColumnType::String,
        _ => return None,
    })
}

/// The parts of an `MLmodel` file we read.
#[derive(Deserialize)]
struct MlModel {
    flavors: BTreeMap<String, serde_norway::Value>,
    signature: Option<Signature>,
    mlflow_version: Option<String>,
    model_uuid: Option<String>,
    metadata: Option<BTreeMap<String, serde_norway::Value>>,
}

#[derive(Deserialize)]
struct Signature {
    inputs: Option<String>,
    outputs: Option<String>,
}

/// Largest member of an MLflow zip we read into memory.
const MAX_MEMBER_BYTES: u64 = 1 << 30;

fn mlflow(onnx: &Onnx, blobs: &BlobStore, bytes: &[u8]) -> Result<Ingestion, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mlmodel_path = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| n.rsplit('/').next() == Some("MLmodel"))
        .min_by_key(|n| n.len())
        .map(|n| n.into_owned())
        .ok_or("the zip has no MLmodel file")?;
    let root = mlmodel_path.trim_end_matches("MLmodel").to_string();
    let text = read_member(&mut zip, &mlmodel_path)?;
    let model: MlModel =
        serde_norway::from_slice(&text).map_err(|e| format!("MLmodel is not valid: {e}"))?;

    let flavors: Vec<&String> = model.flavors.keys().collect();
    let mut details = BTreeMap::new();
    details.insert("flavors".to_string(), json!(flavors));
    for (k, v) in [
        ("mlflow_version", &model.mlflow_version),
        ("model_uuid", &model.model_uuid),
    ] {
        if let Some(v) = v {
            details.insert(k.into(), json!(v));
        }
    }
    for key in ["source_model_name", "source_model_version"] {
        if let Some(v) = model.metadata.as_ref().and_then(|m| m.get(key)) {
            let v = serde_json::to_value(v).map_err(|e| e.to_string())?;
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            details.insert(key.into(), json!(text));
        }
    }
    let Some(flavor) = model.flavors.get("onnx") else {
        return Ok(Ingestion {
            details,
            ..not_deployable(
                "python/mlflow",
                format!(
                    "the MLflow model has no onnx flavor (flavors: {})",
                    flavors
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        });
    };
    let data = flavor
        .get("data")
        .and_then(serde_norway::Value::as_str)
        .ok_or("the onnx flavor names no data file")?;
    let member = format!("{root}{data}");
    details.insert("onnx_model_path".into(), json!(member));
    let model_bytes = read_member(&mut zip, &member)?;
    let stored = blobs
        .put(&model_bytes)
        .map_err(|e| format!("storing the inner model: {e}"))?;
    let mut result = onnx_model(onnx, stored.hash.to_hex(), &model_bytes);
    result.details.append(&mut details);
    result.model_type = ONNX_MODEL_TYPE.into();

    // The signature, when present, names the columns; it wins over the graph's names.
    if let Some(sig) = &model.signature {
        for (side, json_text, slot) in [
            ("inputs", &sig.inputs, &mut result.input_schema),
            ("outputs", &sig.outputs, &mut result.output_schema),
        ] {
            if let Some(text) = json_text {
                *slot = Some(signature_columns(side, text)?);
            }
        }
        result
            .details
            .insert("schema_source".into(), json!("mlflow_signature"));
    }
    Ok(result)
}

fn read_member(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let file = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    file.take(MAX_MEMBER_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

/// Maps a column-based MLflow signature (`[{"type", "name"}]`) to our schema types.
fn signature_columns(side: &str, text: &str) -> Result<Vec<Column>, String> {
    let items: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("signature {side}: {e}"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item.get("name").and_then(Value::as_str).ok_or_else(|| {
                format!("signature {side}: column {i} has no name (tensor-based signatures are not supported)")
            })?;
            let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
            let column_type = match ty {
                "float" => ColumnType::Float32,
                "double" => ColumnType::Float64,
                "integer" => ColumnType::Int32,
                "long" => ColumnType::Int64,
                "boolean" => ColumnType::Boolean,
                "string" => ColumnType::String,
                "datetime" => ColumnType::Time64,
                other => return Err(format!("signature {side}: column {name:?} has MLflow type {other:?}, which the schema cannot express")),
            };
            Ok(Column { name: name.to_string(), column_type })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_signature_types_map_and_unknown_ones_name_the_column() {
        let cols = signature_columns(
            "inputs",
            r#"[{"type": "long", "name": "a"}, {"type": "datetime", "name": "t"}]"#,
        )
        .unwrap();
        assert_eq!(cols[0].column_type, ColumnType::Int64);
        assert_eq!(cols[1].column_type, ColumnType::Time64);
        let err =
            signature_columns("inputs", r#"[{"type": "binary", "name": "img"}]"#).unwrap_err();
        assert!(err.contains("\"img\""), "{err}");
    }
}
