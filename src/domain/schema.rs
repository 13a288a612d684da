//! Model schemas and typed experiment metadata.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DomainError;

/// The column types of H2O's model schema; parsed case-insensitively, stored canonical.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
pub enum ColumnType {
    Boolean,
    Time64,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
}

impl ColumnType {
    pub const ALL: [ColumnType; 7] = [
        ColumnType::Boolean,
        ColumnType::Time64,
        ColumnType::Float32,
        ColumnType::Float64,
        ColumnType::Int32,
        ColumnType::Int64,
        ColumnType::String,
    ];

    pub fn parse(s: &str) -> Option<ColumnType> {
        ColumnType::ALL
            .into_iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One column of a model's input or output schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
}

/// Metadata keys whose values must be model schemas.
pub const SCHEMA_KEYS: [&str; 2] = ["input_schema", "output_schema"];

/// Reads a schema given as JSON (`[{"name", "type"}]`), naming the first bad column.
pub fn parse_schema(key: &str, value: &Value) -> Result<Vec<Column>, DomainError> {
    let invalid = |detail: String| DomainError::InvalidSchema {
        key: key.to_string(),
        detail,
    };
    let items = value
        .as_array()
        .ok_or_else(|| invalid("expected an array of {\"name\", \"type\"} objects".into()))?;
    if items.is_empty() {
        return Err(invalid("a schema needs at least one column".into()));
    }
    let mut columns: Vec<Column> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| invalid(format!("column {i} has no name")))?;
        let type_name = item
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("column {i} ({name:?}) has no type")))?;
        let column_type = ColumnType::parse(type_name).ok_or_else(|| {
            invalid(format!(
                "column {i} ({name:?}) has type {type_name:?}; expected one of {}",
                ColumnType::ALL.map(|t| t.to_string()).join(", ")
            ))
        })?;
        if let Some(extra) = item
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "name" && *k != "type"))
        {
            return Err(invalid(format!(
                "column {i} ({name:?}) has unknown field {extra:?}"
            )));
        }
        if columns.iter().any(|c| c.name == name) {
            return Err(invalid(format!("column {i}: name {name:?} appears twice")));
        }
        columns.push(Column {
            name: name.to_string(),
            column_type,
        });
    }
    Ok(columns)
}

/// A typed metadata value, as H2O's experiment metadata has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum MetadataValue {
    String(String),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Json(Value),
    /// RFC 3339, stored in UTC.
    Timestamp(String),
}

/// The largest integer canonical JSON (RFC 8785) carries exactly.
const MAX_EXACT_INT: i64 = (1 << 53) - 1;

/// Checks and normalizes metadata: int64 within what canonical JSON carries exactly,
/// timestamps as RFC 3339 UTC, and schema keys holding valid schemas (stored canonical).
pub fn normalize_metadata(
    entries: BTreeMap<String, MetadataValue>,
) -> Result<BTreeMap<String, MetadataValue>, DomainError> {
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let invalid = |detail: String| DomainError::InvalidMetadata {
            key: key.clone(),
            detail,
        };
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(invalid(
                "keys are 1 to 128 characters without control characters".into(),
            ));
        }
        let value = match value {
            MetadataValue::Int64(n) if n.abs() > MAX_EXACT_INT => {
                return Err(invalid(format!(
                    "{n} is beyond ±(2^53-1), which canonical JSON cannot carry exactly; store it as a string"
                )));
            }
            MetadataValue::Timestamp(t) => {
                let parsed = chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| invalid(format!("{t:?} is not an RFC 3339 timestamp: {e}")))?;
                MetadataValue::Timestamp(crate::log::envelope::format_time(parsed.to_utc()))
            }
            v => v,
        };
        let value = if SCHEMA_KEYS.contains(&key.as_str()) {
            let MetadataValue::Json(json) = &value else {
                return Err(invalid("a schema is stored as a json value".into()));
            };
            let columns = parse_schema(&key, json)?;
            schema_value(&columns)
        } else {
            value
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// A schema as the metadata value that stores it.
pub fn schema_value(columns: &[Column]) -> MetadataValue {
    MetadataValue::Json(serde_json::to_value(columns).unwrap_or(Value::Null))
}

/// The schema stored under `key`, if any (already validated when it was stored).
pub fn stored_schema(metadata: &BTreeMap<String, MetadataValue>, key: &str) -> Option<Vec<Column>> {
    match metadata.get(key) {
        Some(MetadataValue::Json(v)) => parse_schema(key, v).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_parse_case_insensitively_and_store_canonical() {
        let cols = parse_schema(
            "input_schema",
            &json!([{"name": "a", "type": "float64"}, {"name": "b", "type": "STRING"}]),
        )
        .unwrap();
        assert_eq!(cols[0].column_type, ColumnType::Float64);
        assert_eq!(
            serde_json::to_value(&cols).unwrap(),
            json!([{"name": "a", "type": "Float64"}, {"name": "b", "type": "String"}])
        );
    }

    #[test]
    fn bad_schemas_name_the_column() {
        let err = parse_schema(
            "input_schema",
            &json!([{"name": "a", "type": "Float32"}, {"name": "age", "type": "decimal"}]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"age\""), "{err}");
        assert!(parse_schema("s", &json!([])).is_err());
        assert!(
            parse_schema(
                "s",
                &json!([{"name": "a", "type": "Int32"}, {"name": "a", "type": "Int32"}])
            )
            .is_err()
        );
        assert!(parse_schema("s", &json!([{"type": "Int32"}])).is_err());
        assert!(parse_schema("s", &json!({"name": "a"})).is_err());
        assert!(parse_schema("s", &json!([{"name": "a", "type": "Int32", "width": 3}])).is_err());
    }

    #[test]
    fn metadata_is_checked_and_normalized() {
        let mut m = BTreeMap::new();
        m.insert(
            "when".into(),
            MetadataValue::Timestamp("2026-01-02T03:04:05+02:00".into()),
        );
        m.insert(
            "input_schema".into(),
            MetadataValue::Json(json!([{"name": "x", "type": "int64"}])),
        );
        let out = normalize_metadata(m).unwrap();
        assert_eq!(
            out["when"],
            MetadataValue::Timestamp("2026-01-02T01:04:05.000000Z".into())
        );
        assert_eq!(
            out["input_schema"],
            MetadataValue::Json(json!([{"name": "x", "type": "Int64"}]))
        );

        let big = BTreeMap::from([("n".to_string(), MetadataValue::Int64(1 << 60))]);
        assert!(matches!(
            normalize_metadata(big),
            Err(DomainError::InvalidMetadata { .. })
        ));
        let bad_time = BTreeMap::from([(
            "t".to_string(),
            MetadataValue::Timestamp("yesterday".into()),
        )]);
        assert!(normalize_metadata(bad_time).is_err());
        let schema_as_string = BTreeMap::from([(
            "input_schema".to_string(),
            MetadataValue::String("x".into()),
        )]);
        assert!(normalize_metadata(schema_as_string).is_err());
    }
}
