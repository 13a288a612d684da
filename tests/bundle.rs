//! Audit bundles: selected events with inclusion proofs against a signed tree head, checked
//! offline from the file alone; every kind of tampering is caught.

mod common;

use std::io::{Cursor, Read, Write};

use common::{Server, score};
use provenant::audit::{Subject, select};
use provenant::log::bundle::{BundleReport, verify, write};
use provenant::projections::replay::Until;
use serde_json::{Value, json};

/// A server with the demo deployed and scored three times, a key rotation, and a project
/// created after it: (server, deployment id, model id).
async fn history() -> (Server, uuid::Uuid, uuid::Uuid) {
    let srv = Server::start().await;
    let admin = *srv.state.registry.read().usernames.get("root").unwrap();
    let (model, deployment) = provenant::demo::seed(&srv.state, admin).await.unwrap();
    let (_, sample) = srv
        .call(
            "GET",
            &format!("/{deployment}/model/sample_request"),
            Some(&srv.admin_token),
            Value::Null,
        )
        .await;
    for _ in 0..3 {
        let (st, _, body) = score(&srv, &deployment.to_string(), sample.clone()).await;
        assert_eq!(st, 200, "{body}");
    }
    srv.ledger.rotate_key("system:test").await.unwrap();
    srv.project(&srv.admin_token, "after").await;
    (srv, deployment, model)
}

fn bundle(srv: &Server, subject: Subject, from: Until, previous: Option<u64>) -> (Vec<u8>, u64) {
    let snap = srv.ledger.snapshot().unwrap();
    let reg = srv.state.registry.read().clone();
    let (positions, what) = select(&snap, &reg, subject, from, Until::End).unwrap();
    let mut out = Cursor::new(Vec::new());
    let m = write(&snap, positions, &what, previous, &mut out, &mut |_, _| {}).unwrap();
    (out.into_inner(), m.events)
}

fn check(bytes: &[u8], key: Option<&str>) -> BundleReport {
    let trusted = key.map(|k| provenant::log::keys::parse_public(k).unwrap());
    verify(Cursor::new(bytes), trusted.as_ref(), &mut |_, _| {}).unwrap()
}

/// The bundle with `file` passed through `edit`.
fn rewrite(bytes: &[u8], file: &str, edit: impl Fn(String) -> String) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        let name = f.name().unwrap().to_string();
        out.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        let text = if name == file { edit(text) } else { text };
        out.write_all(text.as_bytes()).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_verify_offline_and_every_tampering_is_caught() {
    let (srv, deployment, model) = history().await;
    let size = srv.size();
    let genesis_key = srv.ledger.keys().unwrap()[0].public_key.clone();

    // The deployment: its states and three runs, plus the ledger's own two events.
    // An earlier head an auditor kept: a size with a signed checkpoint.
    let earlier = srv.ledger.snapshot().unwrap().checkpoints().unwrap()[4].0;
    let (b, events) = bundle(
        &srv,
        Subject::Deployment(deployment),
        Until::End,
        Some(earlier),
    );
    let r = check(&b, Some(&genesis_key));
    assert_eq!(r.failure, None, "{r:?}");
    assert_eq!((r.events, r.tree_size, r.keys), (events, size, 2));
    assert_eq!(r.previous_tree_size, Some(earlier));
    let runs = srv
        .ledger
        .read_all(0, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.unsigned.event_type == "InferenceRunRecorded")
        .count() as u64;
    assert_eq!(runs, 3);
    assert!(
        events >= runs + 2 + 2,
        "runs, states and the ledger's events: {events}"
    );

    // Other selections verify too.
    let reg = srv.state.registry.read().clone();
    let project = reg.models[&model].project_id;
    drop(reg);
    for subject in [
        Subject::All,
        Subject::Project(project),
        Subject::Model {
            model_id: model,
            version: Some(1),
        },
    ] {
        let (b, n) = bundle(&srv, subject, Until::End, None);
        let r = check(&b, None);
        assert_eq!(r.failure, None, "{subject:?}: {r:?}");
        assert_eq!(r.events, n);
    }
    let (_, all) = bundle(&srv, Subject::All, Until::End, None);
    assert_eq!(all, size);
    let (_, late) = bundle(&srv, Subject::All, Until::Position(size - 1), None);
    assert_eq!(late, 1 + 2, "the last event and the ledger's own two");

    // Tampering.
    let wrong_key = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    let failure = |b: &[u8], key: Option<&str>| check(b, key).failure.unwrap_or_default();
    assert!(failure(&b, Some(wrong_key)).contains("trusted key"));
    let edited = rewrite(&b, "events.txt", |t| {
        t.replacen("\"Healthy\"", "\"Failed\"", 1)
    });
    assert!(
        failure(&edited, None).contains("hash does not recompute"),
        "{}",
        failure(&edited, None)
    );
    let dropped = rewrite(&b, "events.txt", |t| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.remove(3);
        lines.join("\n") + "\n"
    });
    assert!(failure(&dropped, None).contains("manifest lists"));
    let swapped = rewrite(&b, "events.txt", |t| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.swap(2, 3);
        lines.join("\n") + "\n"
    });
    assert!(failure(&swapped, None).contains("out of order"));
    let reproof = rewrite(&b, "events.txt", |t| {
        let mut lines: Vec<String> = t.lines().map(String::from).collect();
        let parts: Vec<&str> = lines[2].splitn(5, ' ').collect();
        let proof = parts[3].replacen(
            &parts[3][..2],
            if &parts[3][..2] == "00" { "11" } else { "00" },
            1,
        );
        lines[2] = [parts[0], parts[1], parts[2], &proof, parts[4]].join(" ");
        lines.join("\n") + "\n"
    });
    assert!(
        failure(&reproof, None).contains("inclusion proof"),
        "{}",
        failure(&reproof, None)
    );
    let head = rewrite(&b, "manifest.json", |t| {
        let mut m: Value = serde_json::from_str(&t).unwrap();
        m["tree_size"] = json!(size - 1);
        m.to_string()
    });
    assert!(failure(&head, None).contains("checkpoint"));
    let keys = rewrite(&b, "manifest.json", |t| {
        let mut m: Value = serde_json::from_str(&t).unwrap();
        m["keys"].as_array_mut().unwrap().pop();
        m.to_string()
    });
    assert!(!failure(&keys, None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_events_and_predictions_export_as_csv_and_parquet_with_filters() {
    use provenant::export::{Filter, events_table, predictions_table, write};
    let (srv, deployment, model) = history().await;
    let snap = srv.ledger.snapshot().unwrap();
    let all = Filter {
        actor: None,
        entity: None,
        event_types: vec![],
        from: Until::End,
        to: Until::End,
    };
    let mut events = events_table(&snap, &all, &mut |_, _| {}).unwrap();
    assert_eq!(events.height() as u64, srv.size());
    assert_eq!(
        events
            .get_column_names()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        [
            "position",
            "recorded_at",
            "actor",
            "event_type",
            "stream",
            "entity_id",
            "schema_version",
            "key_id",
            "hash"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("events.csv");
    write(&mut events, &csv).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        srv.size() + 1,
        "a header and a line per event"
    );
    let last = srv.ledger.read_all(srv.size() - 1, 1).unwrap().remove(0);
    assert!(
        text.contains(&last.hash.to_hex()),
        "hashes as the ledger has them"
    );

    // Filters: one type; one entity; a position range; an actor.
    let runs = Filter {
        event_types: vec!["InferenceRunRecorded".into()],
        ..all.clone()
    };
    assert_eq!(
        events_table(&snap, &runs, &mut |_, _| {}).unwrap().height(),
        3
    );
    let of_deployment = Filter {
        entity: Some(deployment),
        ..all.clone()
    };
    let n = events_table(&snap, &of_deployment, &mut |_, _| {})
        .unwrap()
        .height();
    assert!(
        n >= 3 + 3,
        "the deployment's states and runs (and its creation): {n}"
    );
    let tail = Filter {
        from: Until::Position(srv.size() - 2),
        ..all.clone()
    };
    assert_eq!(
        events_table(&snap, &tail, &mut |_, _| {}).unwrap().height(),
        2
    );
    let scorer = Filter {
        actor: Some("system:scorer".into()),
        ..all.clone()
    };
    let by_scorer = events_table(&snap, &scorer, &mut |_, _| {}).unwrap();
    assert!(by_scorer.height() >= 3);

    // Predictions: one row per request, by deployment or model, to Parquet.
    let mut p = predictions_table(&snap, &all, &mut |_, _| {}).unwrap();
    assert_eq!(p.height(), 3);
    let by_model = Filter {
        entity: Some(model),
        ..all.clone()
    };
    assert_eq!(
        predictions_table(&snap, &by_model, &mut |_, _| {})
            .unwrap()
            .height(),
        3
    );
    let nobody = Filter {
        actor: Some("nobody".into()),
        ..all.clone()
    };
    assert_eq!(
        predictions_table(&snap, &nobody, &mut |_, _| {})
            .unwrap()
            .height(),
        0
    );
    let parquet = dir.path().join("predictions.parquet");
    write(&mut p, &parquet).unwrap();
    let bytes = std::fs::read(&parquet).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    use polars::prelude::SerReader;
    let back = polars::prelude::ParquetReader::new(std::fs::File::open(&parquet).unwrap())
        .finish()
        .unwrap();
    assert_eq!(back.shape(), p.shape());
    assert!(matches!(
        write(&mut p, &dir.path().join("p.xlsx")),
        Err(provenant::export::ExportError::Usage(_))
    ));
}
