//! Crash safety: a child process appends from many tasks and prints each acknowledged
//! event; it is killed with SIGKILL at random moments. After every kill the log reopens,
//! every acknowledged event is present and unchanged, and verification passes.
//! Rounds: 20 by default, `PROVENANT_CRASH_ROUNDS` to ask for more.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use provenant::log::{self, verify};

/// A small deterministic generator for the kill delays.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let rounds: u64 = std::env::var("PROVENANT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut rng = 0x5eed_u64;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_provenant"))
            .args(["torture", "--tasks", "24", "--data"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Let it start (the first round also initializes), then kill at a random moment.
        let delay = 150 + next(&mut rng) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must have been killed"
        );
        let mut new = 0;
        for line in reader.join().unwrap() {
            // A line cut by the kill has no complete hash and is not an acknowledgement.
            let mut parts = line.split(' ');
            if let (Some("ack"), Some(p), Some(h)) = (parts.next(), parts.next(), parts.next())
                && h.len() == 64
            {
                let prior = acked.insert(p.parse().unwrap(), h.to_string());
                assert!(
                    prior.is_none_or(|x| x == h),
                    "round {round}: position {p} acknowledged twice with different hashes"
                );
                new += 1;
            }
        }
        let snap = log::read_only(dir.path()).unwrap();
        for (p, h) in &acked {
            let stored = snap.event_hash(*p).unwrap().map(|d| d.to_hex());
            assert_eq!(
                stored.as_deref(),
                Some(h.as_str()),
                "round {round}: acknowledged event {p} lost or changed"
            );
        }
        let report = verify::verify(&snap, &verify::Options::default(), &mut |_, _| {}).unwrap();
        assert!(report.intact(), "round {round}: {:?}", report.failure);
        eprintln!(
            "round {round}: killed after {delay} ms, {new} new acks, log has {} events",
            report.events
        );
    }
    assert!(
        acked.len() as u64 > rounds,
        "the child must have acknowledged appends: {}",
        acked.len()
    );
}
