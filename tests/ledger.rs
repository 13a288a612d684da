//! The ledger through its library API: concurrency, subscriptions, limits, keys, tampering.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{event, fill, fresh};
use provenant::blobs::{BlobError, BlobStore};
use provenant::log::checkpoint::Checkpoint;
use provenant::log::envelope::split_record;
use provenant::log::merkle::{self, Frontier, leaf_hash};
use provenant::log::store::{
    BLOBS, Direction, EVENTS, MERKLE, MERKLE_STORED_FROM, MERKLE_STORED_START, META, STREAM_INDEX,
    TAIL_INDEX, merkle_key,
};
use provenant::log::{self, AppendError, BlobChanges, ExpectedVersion, Ledger, LogError, verify};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde_json::json;

fn verify_dir(dir: &Path) -> verify::Report {
    let snap = log::read_only(dir).unwrap();
    verify::verify(&snap, &verify::Options::default(), &mut |_, _| {}).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_versions_lose_no_update_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    let (tasks, per_task) = (24, 15);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let (mut done, mut conflicts) = (0, 0);
            while done < per_task {
                let current = ledger.snapshot().unwrap().stream_head("counter").unwrap();
                let expected = current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                match ledger
                    .append(
                        "counter",
                        expected,
                        vec![event("Incremented", json!({"task": t}))],
                    )
                    .await
                {
                    Ok(_) => done += 1,
                    Err(AppendError::Conflict { actual, .. }) => {
                        assert_ne!(actual, current, "a conflict reports the version that moved");
                        conflicts += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let events = ledger
        .read_stream("counter", 0, Direction::Forward, usize::MAX)
        .unwrap();
    assert_eq!(
        events.len(),
        tasks * per_task,
        "every acknowledged increment is there, once"
    );
    for (v, e) in events.iter().enumerate() {
        assert_eq!(e.unsigned.stream_version, v as u64);
    }
    assert!(conflicts > 0, "contention should have produced conflicts");
    assert!(verify_dir_live(&ledger).intact());
}

fn verify_dir_live(ledger: &Ledger) -> verify::Report {
    verify::verify(
        &ledger.snapshot().unwrap(),
        &verify::Options::default(),
        &mut |_, _| {},
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_streams_keep_their_order_and_positions_have_no_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    let mut handles = Vec::new();
    for s in 0..48 {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let mut expected = ExpectedVersion::NoStream;
            for i in 0..40 {
                let a = ledger
                    .append(
                        &format!("p-{s}"),
                        expected,
                        vec![event("Seq", json!({"i": i}))],
                    )
                    .await
                    .unwrap();
                expected = ExpectedVersion::Exact(a.events[0].stream_version);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for s in 0..48 {
        let events = ledger
            .read_stream(&format!("p-{s}"), 0, Direction::Forward, usize::MAX)
            .unwrap();
        let seq: Vec<u64> = events
            .iter()
            .map(|e| e.unsigned.payload["i"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..40).collect::<Vec<_>>());
        let back = ledger
            .read_stream(&format!("p-{s}"), u64::MAX, Direction::Backward, 5)
            .unwrap();
        let vs: Vec<u64> = back.iter().map(|e| e.unsigned.stream_version).collect();
        assert_eq!(vs, vec![39, 38, 37, 36, 35]);
    }
    let all = ledger.read_all(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 1 + 48 * 40);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position() == i as u64)
    );
    assert_eq!(ledger.head().size, all.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_stream_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    for round in 0..30 {
        let stream = format!("race-{round}");
        let a = ledger.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Created", json!({"by": "a"}))],
        );
        let b = ledger.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Created", json!({"by": "b"}))],
        );
        let (ra, rb) = tokio::join!(a, b);
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "round {round}");
        let err = ra.err().or(rb.err()).unwrap();
        assert_eq!(
            err,
            AppendError::Conflict {
                stream: stream.clone(),
                expected: ExpectedVersion::NoStream,
                actual: Some(0)
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_switch_from_catch_up_to_live_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 3, 50).await;
    let (writers, per_writer) = (8, 150);
    let total = ledger.head().size + (writers * per_writer) as u64;
    let mut subs = [ledger.subscribe(0), ledger.subscribe(100)];
    let mut handles = Vec::new();
    for w in 0..writers {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_writer {
                ledger
                    .append(
                        &format!("w-{w}"),
                        ExpectedVersion::Any,
                        vec![event("Live", json!({"i": i}))],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let late = tokio::spawn({
        let ledger = ledger.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut sub = ledger.subscribe(0);
            let mut seen = Vec::new();
            while seen.len() < total as usize {
                seen.push(sub.next().await.unwrap().position());
            }
            seen
        }
    });
    for (i, sub) in subs.iter_mut().enumerate() {
        let start = if i == 0 { 0 } else { 100 };
        let mut seen = Vec::new();
        while seen.len() < (total - start) as usize {
            let e = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
                .await
                .unwrap()
                .unwrap();
            seen.push(e.position());
        }
        assert_eq!(seen, (start..total).collect::<Vec<_>>());
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(late.await.unwrap(), (0..total).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_appends_are_refused_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    Ledger::init(dir.path()).unwrap();
    let config = log::Config {
        max_payload_bytes: 64,
        ..Default::default()
    };
    let ledger = Ledger::open(dir.path(), config).unwrap();
    let before = ledger.head();
    let cases = [
        ("s", vec![], AppendError::Empty),
        (
            "",
            vec![event("A", json!({}))],
            AppendError::InvalidStream("".into()),
        ),
        (
            "s",
            vec![event("bad type!", json!({}))],
            AppendError::InvalidEventType("bad type!".into()),
        ),
        (
            "s",
            vec![event("A", json!({})), event("A", json!([1]))],
            AppendError::PayloadNotObject { index: 1 },
        ),
        (
            "s",
            vec![event("A", json!({"x": "y".repeat(100)}))],
            AppendError::PayloadTooLarge {
                index: 0,
                size: 108,
                limit: 64,
            },
        ),
    ];
    for (stream, events, want) in cases {
        assert_eq!(
            ledger
                .append(stream, ExpectedVersion::Any, events)
                .await
                .unwrap_err(),
            want
        );
    }
    let big = ledger
        .append(
            "s",
            ExpectedVersion::Any,
            vec![event("A", json!({"n": 9007199254740993u64}))],
        )
        .await;
    assert!(matches!(
        big,
        Err(AppendError::PayloadNotCanonicalizable { index: 0, .. })
    ));
    let conflict = ledger
        .append(
            "ledger",
            ExpectedVersion::NoStream,
            vec![event("A", json!({}))],
        )
        .await;
    assert!(matches!(
        conflict,
        Err(AppendError::Conflict {
            actual: Some(0),
            ..
        })
    ));
    assert_eq!(
        ledger.head().size,
        before.size,
        "no rejected command appended anything"
    );
    assert_eq!(ledger.head().checkpoint, before.checkpoint);
    assert!(matches!(
        ledger.read_stream("nope", 0, Direction::Forward, 10),
        Err(LogError::UnknownStream(_))
    ));
}

#[tokio::test]
async fn data_dir_lock_format_version_and_missing_dir_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Ledger::open(dir.path(), Default::default()),
        Err(LogError::NotInitialized(_))
    ));
    let ledger = fresh(dir.path());
    assert!(matches!(
        Ledger::open(dir.path(), Default::default()),
        Err(LogError::Locked(_))
    ));
    assert!(matches!(
        Ledger::init(dir.path()),
        Err(LogError::AlreadyInitialized(_))
    ));
    assert!(ledger.close().is_ok());

    let db = redb::Database::open(dir.path().join(log::DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format_version", b"99".as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let err = Ledger::open(dir.path(), Default::default()).err().unwrap();
    assert!(
        matches!(&err, LogError::UnsupportedFormat { found, .. } if found == "99"),
        "{err}"
    );
    assert!(err.to_string().contains("format version 99"));
}

#[tokio::test]
async fn key_rotation_is_signed_by_the_old_key_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 2, 5).await;
    let old = ledger.head().key_id;
    let (info, appended) = ledger.rotate_key("user:admin").await.unwrap();
    let rotation = ledger.event(appended.events[0].position).unwrap().unwrap();
    assert_eq!(
        rotation.unsigned.key_id, old,
        "the rotation is signed by the old key"
    );
    fill(&ledger, 2, 5).await;
    let after = ledger.read_all(info.valid_from, usize::MAX).unwrap();
    assert!(!after.is_empty() && after.iter().all(|e| e.unsigned.key_id == info.key_id));
    let keys = ledger.keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].valid_to, Some(info.valid_from));
    assert_eq!(keys[1], info);
    let size = ledger.head().size;
    assert!(ledger.close().is_ok());

    let report = verify_dir(dir.path());
    assert!(report.intact(), "{:?}", report.failure);
    assert_eq!((report.keys, report.events), (2, size));
    let reopened = Ledger::open(dir.path(), Default::default()).unwrap();
    assert_eq!(reopened.head().key_id, info.key_id);
    fill(&reopened, 1, 3).await;
    assert!(verify_dir_live(&reopened).intact());
}

/// A copy of the data dir's files (not its keys). Taken while the ledger runs, between
/// acknowledged appends (nothing in flight), it is the data dir as a crash would leave it.
fn copy_files(src: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_image_replays_every_acknowledged_event_from_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    Ledger::init(dir.path()).unwrap();
    // A small log, so the committer makes redb durable and starts the log again many times:
    // the file then holds records of earlier passes after the current one's.
    let config = log::Config {
        wal_capacity: 48 << 10,
        ..Default::default()
    };
    let ledger = Ledger::open(dir.path(), config).unwrap();
    let mut replayed_rounds = 0;
    for round in 0..12u64 {
        let mut blob = None;
        for i in 0..round * 7 + 1 {
            let bytes = format!("blob of round {round}, event {i}").into_bytes();
            let (hash, compressed) = BlobStore::encode(&bytes).unwrap();
            let changes = BlobChanges {
                put: vec![(hash, compressed)],
                delete: Vec::new(),
            };
            ledger
                .append_with_blobs(
                    &format!("s-{}", i % 3),
                    ExpectedVersion::Any,
                    vec![event(
                        "Filled",
                        json!({"round": round, "i": i, "pad": "x".repeat(300)}),
                    )],
                    changes,
                )
                .await
                .unwrap();
            blob = Some((hash, bytes));
        }
        let head = ledger.head();
        let image = copy_files(dir.path());
        {
            let db = redb::Database::open(image.path().join(log::DB_FILE)).unwrap();
            let in_redb = db
                .begin_read()
                .unwrap()
                .open_table(EVENTS)
                .unwrap()
                .len()
                .unwrap();
            assert!(in_redb <= head.size);
            replayed_rounds += usize::from(in_redb < head.size);
        }
        let snap = log::read_only(image.path()).unwrap();
        assert_eq!(
            snap.size().unwrap(),
            head.size,
            "round {round}: every acknowledged event"
        );
        assert_eq!(snap.event_hash(head.size - 1).unwrap(), head.last_hash);
        assert_eq!(
            snap.checkpoint(head.size).unwrap().as_deref(),
            Some(head.checkpoint.as_str())
        );
        let (hash, bytes) = blob.unwrap();
        let stored = snap
            .blob(&hash)
            .unwrap()
            .expect("the blob came back with its event");
        assert_eq!(zstd::decode_all(stored.as_slice()).unwrap(), bytes);
        drop(snap);
        let report = verify_dir(image.path());
        assert!(report.intact(), "round {round}: {:?}", report.failure);
        // Replayed once, the log has nothing more to give.
        let db = redb::Database::open(image.path().join(log::DB_FILE)).unwrap();
        assert_eq!(
            db.begin_read()
                .unwrap()
                .open_table(EVENTS)
                .unwrap()
                .len()
                .unwrap(),
            head.size
        );
    }
    assert!(
        replayed_rounds >= 6,
        "only {replayed_rounds} rounds needed the log"
    );
    assert!(ledger.close().is_ok());
    // A closed ledger leaves redb durable and the log empty.
    let size = ledger_size_in_redb(dir.path());
    assert_eq!(size, verify_dir(dir.path()).events);
}

fn ledger_size_in_redb(dir: &Path) -> u64 {
    let db = redb::Database::open(dir.join(log::DB_FILE)).unwrap();
    db.begin_read()
        .unwrap()
        .open_table(EVENTS)
        .unwrap()
        .len()
        .unwrap()
}

/// Rewrites one stored record (or two) in a copy of the data dir and verifies the copy.
fn tamper(src: &Path, edit: impl FnOnce(&redb::Database)) -> verify::Report {
    let copy = copy_files(src);
    let db = redb::Database::open(copy.path().join(log::DB_FILE)).unwrap();
    edit(&db);
    drop(db);
    verify_dir(copy.path())
}

fn rewrite(db: &redb::Database, position: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        let mut rec = t.get(position).unwrap().unwrap().value().to_vec();
        f(&mut rec);
        t.insert(position, rec.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn verify_finds_every_kind_of_tampering_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 3, 20).await;
    let size = ledger.head().size;
    assert!(ledger.close().is_ok());
    assert!(verify_dir(dir.path()).intact());

    for target in [1, size / 2, size - 1] {
        // A byte of the payload: inside the canonical JSON, at the digit of "i".
        let r = tamper(dir.path(), |db| {
            rewrite(db, target, |rec| {
                let at = rec.windows(5).position(|w| w == b"\"i\":").unwrap_or(0) + 4;
                rec[at] = if rec[at] == b'9' { b'8' } else { b'9' };
            })
        });
        assert_eq!(
            r.failure.as_ref().map(|f| f.position),
            Some(target),
            "payload edit: {:?}",
            r.failure
        );

        let r = tamper(dir.path(), |db| {
            rewrite(db, target, |rec| {
                let n = rec.len();
                rec[n - 96 + 5] ^= 1;
            })
        });
        let f = r.failure.unwrap();
        assert_eq!(f.position, target, "hash edit");
        assert!(f.reason.contains("hash"), "{}", f.reason);

        let r = tamper(dir.path(), |db| {
            rewrite(db, target, |rec| {
                let n = rec.len();
                rec[n - 10] ^= 0x40;
            })
        });
        let f = r.failure.unwrap();
        assert_eq!(f.position, target, "signature edit");
        assert!(f.reason.contains("signature"), "{}", f.reason);
    }
    // Two events swapped.
    let r = tamper(dir.path(), |db| {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(EVENTS).unwrap();
            let a = t.get(10).unwrap().unwrap().value().to_vec();
            let b = t.get(11).unwrap().unwrap().value().to_vec();
            t.insert(10, b.as_slice()).unwrap();
            t.insert(11, a.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    });
    assert_eq!(r.failure.map(|f| f.position), Some(10), "swap");
    // The tail truncated: the last checkpoint no longer matches.
    let r = tamper(dir.path(), |db| {
        let txn = db.begin_write().unwrap();
        txn.open_table(EVENTS).unwrap().remove(size - 1).unwrap();
        txn.commit().unwrap();
    });
    assert!(r.failure.is_some(), "truncation");
    // A different trusted key.
    let snap = log::read_only(dir.path()).unwrap();
    let other = log::keys::LedgerKey::from_seed([9; 32]).public();
    let r = verify::verify(
        &snap,
        &verify::Options {
            strict: true,
            trusted_key: Some(other),
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.failure.map(|f| f.position), Some(0));
}

#[tokio::test]
async fn every_stored_position_has_a_unique_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 2, 10).await;
    let all = ledger.read_all(0, usize::MAX).unwrap();
    let ids: HashSet<_> = all.iter().map(|e| e.unsigned.event_id).collect();
    assert_eq!(ids.len(), all.len());
    for e in &all {
        assert_eq!(
            ledger
                .event_by_id(e.unsigned.event_id)
                .unwrap()
                .unwrap()
                .position(),
            e.position()
        );
    }
}

/// Positions of `stream`'s events read with `from`, `direction` and `limit`.
fn positions(
    ledger: &Ledger,
    stream: &str,
    from: u64,
    direction: Direction,
    limit: usize,
) -> Vec<u64> {
    ledger
        .read_stream(stream, from, direction, limit)
        .unwrap()
        .iter()
        .map(|e| e.position())
        .collect()
}

/// Appends `rounds` rounds of one event per stream, in batches of 100 rounds per append;
/// answers each stream's positions in version order.
async fn interleave(ledger: &Ledger, streams: usize, rounds: usize) -> Vec<Vec<u64>> {
    let mut expected = vec![Vec::new(); streams];
    for chunk in 0..rounds.div_ceil(100) {
        for (s, positions) in expected.iter_mut().enumerate() {
            let n = 100.min(rounds - chunk * 100);
            let events = (0..n).map(|i| event("Filled", json!({"i": i}))).collect();
            let a = ledger
                .append(&format!("t-{s}"), ExpectedVersion::Any, events)
                .await
                .unwrap();
            positions.extend(a.events.iter().map(|e| e.position));
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reads_span_the_tail_index_and_the_merged_index() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    // 3 × 3,000 events: one merge at 8,192 moves most of them; the rest stay in the tail.
    let expected = interleave(&ledger, 3, 3000).await;
    let check = |ledger: &Ledger| {
        for (s, want) in expected.iter().enumerate() {
            let name = format!("t-{s}");
            assert_eq!(
                positions(ledger, &name, 0, Direction::Forward, usize::MAX),
                *want
            );
            for from in [0u64, 1, 2500, 2700, 2999] {
                let f = positions(ledger, &name, from, Direction::Forward, 400);
                let lo = from as usize;
                assert_eq!(
                    f,
                    want[lo..(lo + 400).min(want.len())],
                    "forward from {from}"
                );
                let b = positions(ledger, &name, from, Direction::Backward, 400);
                let back: Vec<u64> = want[..=lo].iter().rev().take(400).copied().collect();
                assert_eq!(b, back, "backward from {from}");
            }
        }
    };
    check(&ledger);
    assert!(ledger.close().is_ok());
    let ledger = Ledger::open(dir.path(), log::Config::default()).unwrap();
    check(&ledger);
    assert!(ledger.close().is_ok());
    assert!(verify_dir(dir.path()).intact());
}

/// Proofs mix stored Merkle nodes with lower ones rebuilt from the events: at every tree
/// size up to 70 the root is the signed one, and every inclusion proof and the consistency
/// proofs to it check against the roots computed from the events alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proof_up_to_70_events_checks_against_the_signed_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 1, 69).await;
    let size = ledger.head().size;
    assert_eq!(size, 70);
    let key = &ledger.keys().unwrap()[0];
    let public = log::keys::parse_public(&key.public_key).unwrap();
    let leaves: Vec<merkle::Node> = ledger
        .read_all(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| leaf_hash(&e.hash.0))
        .collect();
    let mut tree = Frontier::default();
    let mut roots = vec![merkle::empty_root()];
    for leaf in &leaves {
        tree.push(*leaf, |_, _, _| {});
        roots.push(tree.root());
    }
    for n in 1..=size {
        let signed = Checkpoint::verify(&ledger.checkpoint(n).unwrap().unwrap(), &public).unwrap();
        assert_eq!(signed.root, roots[n as usize], "signed root at {n}");
        assert_eq!(ledger.root_at(n).unwrap(), roots[n as usize], "root at {n}");
        for p in 0..n {
            let (leaf, proof) = ledger.inclusion_proof(p, n).unwrap();
            merkle::verify_inclusion(p, n, &leaf, &proof, &roots[n as usize])
                .unwrap_or_else(|e| panic!("inclusion of {p} in {n}: {e}"));
        }
        for m in 1..n {
            let proof = ledger.consistency_proof(m, n).unwrap();
            merkle::verify_consistency(m, n, &proof, &roots[m as usize], &roots[n as usize])
                .unwrap_or_else(|e| panic!("consistency {m} → {n}: {e}"));
        }
    }
    assert!(ledger.close().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    let before = interleave(&ledger, 2, 50).await;
    let proof_before = ledger.inclusion_proof(37, 80).unwrap();
    assert!(ledger.close().is_ok());
    // Rewrite it as format 1 kept it: every entry in the stream index, no tail table, every
    // Merkle node stored, leaves included.
    {
        let db = redb::Database::open(dir.path().join(log::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let tail = txn.open_table(TAIL_INDEX).unwrap();
            let mut index = txn.open_table(STREAM_INDEX).unwrap();
            for item in tail.iter().unwrap() {
                let (k, v) = item.unwrap();
                index.insert(v.value(), k.value()).unwrap();
            }
            let events = txn.open_table(EVENTS).unwrap();
            let mut nodes = txn.open_table(MERKLE).unwrap();
            let mut tree = Frontier::default();
            for item in events.iter().unwrap() {
                let (k, v) = item.unwrap();
                let (_, hash, _) = split_record(v.value()).unwrap();
                nodes.insert(k.value(), leaf_hash(&hash.0)).unwrap();
                tree.push(leaf_hash(&hash.0), |level, index, h| {
                    nodes.insert(merkle_key(level, index), *h).unwrap();
                });
            }
        }
        txn.delete_table(TAIL_INDEX).unwrap();
        txn.delete_table(BLOBS).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", b"1".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let snap = log::read_only(dir.path()).unwrap();
    assert_eq!(
        snap.read_stream("t-1", 0, Direction::Forward, usize::MAX)
            .unwrap()
            .len(),
        50,
        "format 1 reads"
    );
    drop(snap);
    let ledger = Ledger::open(dir.path(), log::Config::default()).unwrap();
    let after = interleave(&ledger, 2, 10).await;
    assert_eq!(
        positions(&ledger, "t-0", 0, Direction::Forward, usize::MAX),
        [before[0].clone(), after[0].clone()].concat()
    );
    assert!(ledger.close().is_ok());
    let db = redb::Database::open(dir.path().join(log::DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get("format_version")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(version, log::store::FORMAT_VERSION.to_string().as_bytes());
    assert!(txn.open_table(BLOBS).is_ok(), "the blob table was added");
    let size = txn.open_table(EVENTS).unwrap().len().unwrap();
    let nodes = txn.open_table(MERKLE).unwrap();
    assert_eq!(
        nodes.range(..MERKLE_STORED_START).unwrap().count(),
        0,
        "stored leaves and low levels were dropped"
    );
    let kept: u64 = (MERKLE_STORED_FROM..64).map(|level| size >> level).sum();
    assert_eq!(
        nodes.range(MERKLE_STORED_START..).unwrap().count() as u64,
        kept
    );
    drop((nodes, txn, db));
    let ledger = Ledger::open(dir.path(), log::Config::default()).unwrap();
    assert_eq!(ledger.inclusion_proof(37, 80).unwrap(), proof_before);
    assert!(ledger.close().is_ok());
    assert!(verify_dir(dir.path()).intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_written_and_deleted_only_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    let store = BlobStore::new(&dir.path().join("blobs"), 1 << 20).with_ledger(ledger.clone());
    let put = |bytes: &[u8]| {
        let (hash, compressed) = BlobStore::encode(bytes).unwrap();
        (
            hash,
            BlobChanges {
                put: vec![(hash, compressed)],
                delete: Vec::new(),
            },
        )
    };
    let append = |expected, changes| {
        ledger.append_with_blobs("runs", expected, vec![event("Run", json!({}))], changes)
    };
    let (kept, changes) = put(b"the rows of a run");
    append(ExpectedVersion::NoStream, changes).await.unwrap();
    assert_eq!(store.get(&kept).unwrap(), b"the rows of a run");
    assert!(store.contains(&kept));

    let (refused, changes) = put(b"a conflicting run");
    let err = append(ExpectedVersion::NoStream, changes)
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
    assert!(matches!(store.get(&refused), Err(BlobError::NotFound(_))));

    ledger.fail_commits(true);
    let (failed, changes) = put(b"a run whose commit fails");
    let err = append(ExpectedVersion::Any, changes).await.unwrap_err();
    assert!(matches!(err, AppendError::Unavailable(_)), "{err}");
    ledger.fail_commits(false);
    assert!(!store.contains(&failed), "no blob without its event");

    let delete = BlobChanges {
        put: Vec::new(),
        delete: vec![kept],
    };
    let mut deleted = false;
    // The first append after a failed commit may still meet the failed epoch.
    for _ in 0..5 {
        if append(ExpectedVersion::Any, delete.clone()).await.is_ok() {
            deleted = true;
            break;
        }
    }
    assert!(deleted);
    assert!(matches!(store.get(&kept), Err(BlobError::NotFound(_))));
    drop(store);
    assert!(ledger.close().is_ok());
    assert!(verify_dir(dir.path()).intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_fail_their_appends_and_the_writer_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fresh(dir.path());
    fill(&ledger, 2, 5).await;
    let size = ledger.head().size;
    ledger.fail_commits(true);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .append(
                    &format!("f-{t}"),
                    ExpectedVersion::Any,
                    vec![event("Lost", json!({"t": t}))],
                )
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(AppendError::Unavailable(_))));
    }
    assert_eq!(ledger.head().size, size, "nothing failed is visible");
    ledger.fail_commits(false);
    // The next append may still meet the failed epoch; within a few it lands, gap-free.
    let mut landed = None;
    for _ in 0..5 {
        if let Ok(a) = ledger
            .append(
                "after",
                ExpectedVersion::Any,
                vec![event("Kept", json!({}))],
            )
            .await
        {
            landed = Some(a.events[0].position);
            break;
        }
    }
    assert_eq!(landed, Some(size));
    assert!(ledger.close().is_ok());
    assert!(verify_dir(dir.path()).intact());
}
