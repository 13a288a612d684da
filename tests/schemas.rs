//! `schemas/` holds the JSON Schema of every event type: the registry's are generated from
//! the event definitions and must match the committed files (set PROVENANT_UPDATE_SCHEMAS=1
//! to rewrite them); the ledger's own are written by hand. Stored payloads are validated
//! against them by `validate_payloads`, used by the API story test.

use std::path::Path;

use provenant::domain::RegistryEvent;
use provenant::log::{GENESIS_EVENT, ROTATION_EVENT};

#[test]
fn committed_schemas_match_the_event_definitions() {
    let update = std::env::var_os("PROVENANT_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in RegistryEvent::schemas() {
        let path = Path::new("schemas").join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale for {stale:?}; run with PROVENANT_UPDATE_SCHEMAS=1"
    );

    // Nothing else lives there: every file is a registry event's or the ledger's own.
    for entry in std::fs::read_dir("schemas").unwrap() {
        let name = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".json")
            .to_string();
        let known = RegistryEvent::TYPES.contains(&name.as_str())
            || [GENESIS_EVENT, ROTATION_EVENT].contains(&name.as_str());
        assert!(known, "schemas/{name}.json names no event type");
    }
}
