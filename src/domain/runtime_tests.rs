//! The ceiling rule, scenario by scenario and as a property over random interleavings.

use super::runtime::*;
use super::tests::World;
use super::{DomainError, Registry, evolve};
use crate::domain::event::GlobalRole;

fn image(id: &str, state: RuntimeState, runtimes: &[(&str, RuntimeState)]) -> Bootstrap {
    let spec = |name: &str| RuntimeSpec {
        name: name.into(),
        image_id: id.into(),
        model_types: vec!["onnx".into()],
        available: true,
        env: Default::default(),
        settings: Default::default(),
    };
    Bootstrap {
        artifact_types: vec![],
        environments: None,
        runtime_images: vec![BootstrapImage {
            id: id.into(),
            spec: ImageSpec {
                name: "Image".into(),
                description: String::new(),
            },
            state,
            versions: vec![],
        }],
        runtimes: runtimes
            .iter()
            .map(|(r, s)| BootstrapRuntime {
                id: r.to_string(),
                spec: spec(r),
                state: *s,
            })
            .collect(),
    }
}

impl World {
    fn boot(&mut self, file: &Bootstrap) {
        check_bootstrap(file).unwrap();
        let d = decide_bootstrap(&self.state, file, "hash");
        self.apply(STREAM, d.events);
    }

    fn set(&mut self, runtime: &str, to: RuntimeState) -> Result<(), DomainError> {
        let cmd = RuntimeCommand::SetState {
            entity: EntityRef::Runtime {
                runtime_id: runtime.into(),
            },
            to,
            reason: "test".into(),
        };
        let d = decide_runtime(&self.state, self.admin, cmd)?;
        self.apply(STREAM, d.events);
        Ok(())
    }

    fn effective(&self, runtime: &str) -> RuntimeState {
        self.state.runtimes.runtimes[runtime].effective
    }
}

use RuntimeState::{Active, Deprecated, Disabled};

#[test]
fn user_deprecation_survives_the_next_bootstrap() {
    let mut w = World::new();
    let file = image("img", Active, &[("r", Active)]);
    w.boot(&file);
    w.set("r", Deprecated).unwrap();
    w.boot(&file);
    assert_eq!(w.effective("r"), Deprecated);
}

#[test]
fn removal_from_the_file_disables_and_blocks_enable() {
    let mut w = World::new();
    w.boot(&image("img", Active, &[("r", Active), ("s", Active)]));
    w.boot(&image("img", Active, &[("s", Active)]));
    let r = &w.state.runtimes.runtimes["r"];
    assert_eq!(
        (r.effective, r.deleted.is_none()),
        (Disabled, true),
        "disabled, not deleted"
    );
    let err = w.set("r", Active).unwrap_err();
    assert!(
        matches!(&err, DomainError::Ceiling(m) if m.contains("DISABLED") && m.contains("bootstrap source") && m.contains("removed from the bootstrap file")),
        "{err}"
    );
    // Restricting stays possible.
    w.set("r", Deprecated).unwrap();
    assert_eq!(w.effective("r"), Disabled);
}

#[test]
fn user_disable_then_enable_only_within_the_platform_ceiling() {
    let mut w = World::new();
    w.boot(&image(
        "img",
        Active,
        &[("free", Active), ("capped", Deprecated)],
    ));
    w.set("free", Disabled).unwrap();
    w.set("free", Active).unwrap();
    assert_eq!(w.effective("free"), Active);
    w.set("capped", Disabled).unwrap();
    assert!(matches!(
        w.set("capped", Active),
        Err(DomainError::Ceiling(_))
    ));
    w.set("capped", Deprecated).unwrap();
    assert_eq!(w.effective("capped"), Deprecated);
}

#[test]
fn bootstrap_entities_cannot_be_deleted_or_redefined_through_the_api() {
    let mut w = World::new();
    w.boot(&image("img", Active, &[("r", Active)]));
    let entity = EntityRef::Runtime {
        runtime_id: "r".into(),
    };
    let del = decide_runtime(
        &w.state,
        w.admin,
        RuntimeCommand::Delete {
            entity,
            reason: "x".into(),
        },
    );
    assert!(matches!(del, Err(DomainError::BootstrapManaged(_))));
    let spec = w.state.runtimes.runtimes["r"].spec.clone();
    let upd = decide_runtime(
        &w.state,
        w.admin,
        RuntimeCommand::UpdateRuntime {
            runtime_id: "r".into(),
            spec,
        },
    );
    assert!(matches!(upd, Err(DomainError::BootstrapManaged(_))));
    // Only admins manage runtimes.
    let user = w.user("alice", vec![GlobalRole::Auditor]);
    let cmd = RuntimeCommand::SetState {
        entity: EntityRef::Runtime {
            runtime_id: "r".into(),
        },
        to: Disabled,
        reason: "x".into(),
    };
    assert!(matches!(
        decide_runtime(&w.state, user, cmd),
        Err(DomainError::Forbidden(_))
    ));
}

#[test]
fn api_entities_have_full_crud_and_deleted_ones_cannot_move() {
    let mut w = World::new();
    let run = |w: &mut World, c: RuntimeCommand| -> Result<(), DomainError> {
        let d = decide_runtime(&w.state, w.admin, c)?;
        w.apply(STREAM, d.events);
        Ok(())
    };
    run(
        &mut w,
        RuntimeCommand::CreateImage {
            image_id: "mine".into(),
            spec: ImageSpec {
                name: "Mine".into(),
                description: String::new(),
            },
        },
    )
    .unwrap();
    let dup = run(
        &mut w,
        RuntimeCommand::CreateImage {
            image_id: "mine".into(),
            spec: ImageSpec {
                name: "Mine".into(),
                description: String::new(),
            },
        },
    );
    assert!(matches!(dup, Err(DomainError::AlreadyExists(_))));
    let spec = RuntimeSpec {
        name: "R".into(),
        image_id: "mine".into(),
        model_types: vec!["onnx".into()],
        available: false,
        env: Default::default(),
        settings: Default::default(),
    };
    run(
        &mut w,
        RuntimeCommand::CreateRuntime {
            runtime_id: "rt".into(),
            spec,
        },
    )
    .unwrap();
    let image = EntityRef::Image {
        image_id: "mine".into(),
    };
    let busy = run(
        &mut w,
        RuntimeCommand::Delete {
            entity: image.clone(),
            reason: "x".into(),
        },
    );
    assert!(
        matches!(busy, Err(DomainError::Conflict(_))),
        "the runtime still uses the image"
    );
    run(
        &mut w,
        RuntimeCommand::Delete {
            entity: EntityRef::Runtime {
                runtime_id: "rt".into(),
            },
            reason: "gone".into(),
        },
    )
    .unwrap();
    run(
        &mut w,
        RuntimeCommand::Delete {
            entity: image.clone(),
            reason: "gone".into(),
        },
    )
    .unwrap();
    let moved = run(
        &mut w,
        RuntimeCommand::SetState {
            entity: image,
            to: Disabled,
            reason: "x".into(),
        },
    );
    assert!(matches!(moved, Err(DomainError::NotFound { .. })));
    let bad = run(
        &mut w,
        RuntimeCommand::CreateImage {
            image_id: "Not A Slug".into(),
            spec: ImageSpec {
                name: "x".into(),
                description: String::new(),
            },
        },
    );
    assert!(matches!(bad, Err(DomainError::Invalid { .. })));
}

/// A tiny deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn no_interleaving_lifts_a_state_above_the_other_sources_ceiling() {
    let states = [Active, Deprecated, Disabled];
    let names = ["a", "b", "c"];
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let mut w = World::new();
        for _ in 0..30 {
            if rng.next().is_multiple_of(3) {
                let mut runtimes: Vec<(&str, RuntimeState)> = Vec::new();
                for n in names {
                    if !rng.next().is_multiple_of(4) {
                        runtimes.push((n, rng.pick(&states)));
                    }
                }
                w.boot(&image("img", Active, &runtimes));
                // Bootstrap never lifts an entity above the API's state.
                for m in w.state.runtimes.runtimes.values() {
                    let api = m.api.as_ref().map_or(Active, |s| s.state);
                    assert!(
                        m.effective <= api,
                        "seed {seed}: bootstrap lifted above the api"
                    );
                }
            } else if !w.state.runtimes.runtimes.is_empty() {
                let name = rng.pick(&names);
                let Some(before) = w.state.runtimes.runtimes.get(name).cloned() else {
                    continue;
                };
                let to = rng.pick(&states);
                let size = w.log.len();
                match w.set(name, to) {
                    Ok(()) => {
                        let api_before = before.api.as_ref().map_or(Active, |s| s.state);
                        let cap = before.bootstrap.as_ref().map_or(Active, |s| s.state);
                        assert!(
                            to <= api_before || to <= cap,
                            "seed {seed}: api raised {name} to {to} above the ceiling {cap}"
                        );
                    }
                    Err(_) => assert_eq!(w.log.len(), size, "a refused command appended"),
                }
            }
            for m in w.state.runtimes.runtimes.values() {
                let of = |s: &Option<SourceState>| s.as_ref().map_or(Active, |s| s.state);
                assert_eq!(m.effective, of(&m.bootstrap).min(of(&m.api)), "seed {seed}");
            }
        }
        let rebuilt = w.log.iter().fold(Registry::default(), evolve);
        assert_eq!(rebuilt, w.state, "seed {seed}: rebuild differs");
    }
}

#[test]
fn disabled_entities_cannot_be_chosen_and_deprecated_ones_warn() {
    let mut w = World::new();
    let mut file = image("img", Active, &[("r", Active)]);
    file.runtime_images[0].versions.push(BootstrapVersion {
        version: "1".into(),
        spec: ImageVersionSpec {
            scorer_version: "1".into(),
            onnxruntime_version: "1.32.0".into(),
            execution_provider: "CPUExecutionProvider".into(),
            intra_op_threads: 1,
            inter_op_threads: 1,
            execution_mode: "sequential".into(),
            graph_optimization: "all".into(),
        },
        state: Deprecated,
    });
    w.boot(&file);
    let warnings = w.state.runtimes.usable("r", "1").unwrap();
    assert_eq!(warnings, ["runtime image version img@1 is DEPRECATED"]);
    assert!(matches!(
        w.state.runtimes.usable("r", "2"),
        Err(DomainError::NotFound { .. })
    ));
    w.set("r", Disabled).unwrap();
    assert!(matches!(
        w.state.runtimes.usable("r", "1"),
        Err(DomainError::Conflict(_))
    ));
}
