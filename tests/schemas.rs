//! `schemas/` holds the JSON Schema of every event type: the registry's are generated from
//! the event definitions and must match the committed files (set PROVENANT_UPDATE_SCHEMAS=1
//! to rewrite them); the ledger's own are written by hand. A type whose payload changed keeps
//! each older version's schema, frozen, in `schemas/v<N>/` (see `domain::upcast`). Stored payloads are validated
//! against them by `validate_payloads`, used by the API story test.

use std::path::Path;

use provenant::domain::{RegistryEvent, upcast};
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

    // Nothing else lives there: every file is a registry event's or the ledger's own, and
    // every older schema version of a type that changed is kept in `schemas/v<N>/`.
    for entry in std::fs::read_dir("schemas").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type().unwrap().is_dir() {
            let version: u32 = name
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("schemas/{name}/ is not a schema version folder"));
            for old in std::fs::read_dir(entry.path()).unwrap() {
                let file = old.unwrap().file_name().to_string_lossy().to_string();
                let event_type = file.trim_end_matches(".json");
                assert!(
                    upcast::current(event_type) > version
                        && RegistryEvent::TYPES.contains(&event_type),
                    "schemas/{name}/{file} is not an older version of a registry event"
                );
            }
            continue;
        }
        let name = name.trim_end_matches(".json");
        let known =
            RegistryEvent::TYPES.contains(&name) || [GENESIS_EVENT, ROTATION_EVENT].contains(&name);
        assert!(known, "schemas/{name}.json names no event type");
    }
    for event_type in RegistryEvent::TYPES {
        for version in 1..upcast::current(event_type) {
            let path = format!("schemas/v{version}/{event_type}.json");
            assert!(Path::new(&path).is_file(), "{path} is missing");
        }
    }
}
