//! Schema evolution: a stored event keeps the bytes it was signed with forever, so an event
//! type that changes shape gets a new schema version and a step that reads the old payload
//! into the new shape. Readers upcast; nothing is ever rewritten in the log.
//!
//! Writers stamp every event with its type's current version (`current`). A payload of an
//! older version goes through each step from its version to the current one, then decodes
//! as usual; a version newer than this build knows is refused, never guessed at.

use serde_json::{Map, Value};

/// A step reading version `from` of a type into version `from + 1`.
type Step = fn(&mut Map<String, Value>) -> Result<(), String>;

/// Every step, by event type and the version it reads. A type's current version is one more
/// than its last step's (1 without steps).
const STEPS: &[(&str, u32, Step)] = &[
    ("InferenceRunRecorded", 1, run_session_v2),
    ("InferenceRunRecorded", 2, run_job_v3),
    ("InferenceRunRecorded", 3, run_variant_v4),
    ("InferenceRunRecorded", 4, run_profile_v5),
    ("DeploymentCreated", 1, deployment_variants_v2),
    ("DriftThresholdsSet", 1, thresholds_methods_v2),
    ("AlertPolicySet", 1, policy_metrics_v2),
    ("AlertRaised", 1, alert_metric_v2),
    ("AlertResolved", 1, alert_metric_v2),
];

/// The schema version writers stamp on `event_type` today.
pub fn current(event_type: &str) -> u32 {
    STEPS
        .iter()
        .filter(|(t, _, _)| *t == event_type)
        .map(|(_, from, _)| from + 1)
        .max()
        .unwrap_or(1)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpcastError {
    #[error(
        "{event_type} schema version {version} is newer than this build reads ({current}); upgrade Provenant to read it"
    )]
    Newer {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("{event_type} schema version {version} does not exist")]
    Unknown { event_type: String, version: u32 },
    #[error("{event_type} schema version {from} cannot be read as version {}: {reason}", from + 1)]
    Step {
        event_type: String,
        from: u32,
        reason: String,
    },
}

/// Reads a payload stored at `version` into the current shape of `event_type`.
pub fn upcast(event_type: &str, version: u32, payload: Value) -> Result<Value, UpcastError> {
    let current = current(event_type);
    if version > current {
        return Err(UpcastError::Newer {
            event_type: event_type.into(),
            version,
            current,
        });
    }
    if version == 0 {
        return Err(UpcastError::Unknown {
            event_type: event_type.into(),
            version,
        });
    }
    let step_error = |from: u32, reason: String| UpcastError::Step {
        event_type: event_type.into(),
        from,
        reason,
    };
    let Value::Object(mut map) = payload else {
        return Err(step_error(version, "the payload is not an object".into()));
    };
    for from in version..current {
        let (_, _, step) = STEPS
            .iter()
            .find(|(t, f, _)| *t == event_type && *f == from)
            .ok_or_else(|| step_error(from, "no step is defined".into()))?;
        step(&mut map).map_err(|reason| step_error(from, reason))?;
    }
    Ok(Value::Object(map))
}

/// `InferenceRunRecorded` v2 names its image as the deployment does (`image_id` and
/// `image_version`, not `"id@version"` in one string), and gathers what the session ran
/// with into `session`. v1 had `cpu_class` only from some point on; absent stays absent.
fn run_session_v2(run: &mut Map<String, Value>) -> Result<(), String> {
    let image = match run.remove("image_version") {
        Some(Value::String(s)) => s,
        _ => return Err("image_version is missing or not a string".into()),
    };
    let (id, version) = image
        .split_once('@')
        .ok_or_else(|| format!("image_version {image:?} is not \"<image id>@<version>\""))?;
    run.insert("image_id".into(), id.into());
    run.insert("image_version".into(), version.into());
    let mut session = Map::new();
    for field in [
        "ort_version",
        "execution_provider",
        "intra_op_threads",
        "inter_op_threads",
        "execution_mode",
        "graph_optimization",
    ] {
        let value = run
            .remove(field)
            .ok_or_else(|| format!("{field} is missing"))?;
        session.insert(field.into(), value);
    }
    match run.remove("cpu_class") {
        None | Some(Value::Null) => {}
        Some(class) => {
            session.insert("cpu_class".into(), class);
        }
    }
    run.insert("session".into(), Value::Object(session));
    Ok(())
}

/// `InferenceRunRecorded` v3 may name the batch scoring job a run belongs to (`job`); a v2
/// run was always online scoring, so it reads as a v3 run without one.
fn run_job_v3(run: &mut Map<String, Value>) -> Result<(), String> {
    match run.contains_key("job") {
        true => Err("a version 2 run cannot name a job".into()),
        false => Ok(()),
    }
}

/// `InferenceRunRecorded` v4 names the deployment's variant that ran it, and marks a
/// challenger's shadow run. A v3 run came from a deployment of one model, which reads as the
/// variant `primary` (see `deployment_variants_v2`), and answered its requests.
fn run_variant_v4(run: &mut Map<String, Value>) -> Result<(), String> {
    if run.contains_key("variant") || run.contains_key("shadow") {
        return Err("a version 3 run cannot name a variant".into());
    }
    run.insert("variant".into(), super::deployment::PRIMARY.into());
    Ok(())
}

/// `InferenceRunRecorded` v5 may carry the inputs binned at scoring time (`profile`); a v4
/// run had none, and reads as a v5 run without one.
fn run_profile_v5(run: &mut Map<String, Value>) -> Result<(), String> {
    match run.contains_key("profile") {
        true => Err("a version 4 run cannot carry a profile".into()),
        false => Ok(()),
    }
}

/// `DeploymentCreated` v2 deploys named variants in a mode; a v1 deployment served its one
/// `spec` alone: the single variant `primary`, of weight 1, not promoted, with no reason.
fn deployment_variants_v2(created: &mut Map<String, Value>) -> Result<(), String> {
    let spec = created
        .remove("spec")
        .ok_or_else(|| "spec is missing".to_string())?;
    let mut variant = Map::new();
    variant.insert("weight".into(), 1.into());
    variant.insert("shadow".into(), false.into());
    variant.insert("spec".into(), spec);
    let mut variants = Map::new();
    variants.insert(super::deployment::PRIMARY.into(), Value::Object(variant));
    created.insert("mode".into(), "single".into());
    created.insert("variants".into(), Value::Object(variants));
    created.insert("promoted_from".into(), Value::Null);
    created.insert("reason".into(), Value::Null);
    Ok(())
}

/// `DriftThresholdsSet` v2 may set each kind of column's test (`numeric_method`,
/// `categorical_method`); a v1 deployment's columns were judged by Evidently's choice, as a
/// v2 event without them says.
fn thresholds_methods_v2(set: &mut Map<String, Value>) -> Result<(), String> {
    let thresholds = set
        .get("thresholds")
        .and_then(Value::as_object)
        .ok_or("thresholds are missing")?;
    match ["numeric_method", "categorical_method"]
        .iter()
        .find(|k| thresholds.contains_key(**k))
    {
        Some(k) => Err(format!("version 1 thresholds cannot set {k}")),
        None => Ok(()),
    }
}

/// `AlertPolicySet` v2 may watch the error rate and accuracy (`error_rate`, `accuracy_min`,
/// `rmse_max`); a v1 policy watched none of them, and reads as a v2 policy that does not.
fn policy_metrics_v2(set: &mut Map<String, Value>) -> Result<(), String> {
    let policy = set
        .get("policy")
        .and_then(Value::as_object)
        .ok_or("policy is missing")?;
    match ["error_rate", "accuracy_min", "rmse_max"]
        .iter()
        .find(|k| policy.contains_key(**k))
    {
        Some(k) => Err(format!("a version 1 policy cannot watch {k}")),
        None => Ok(()),
    }
}

/// `AlertRaised` and `AlertResolved` v2 may name the metrics v2 policies watch; a v1 alert's
/// metric is one of the three before them, and reads unchanged.
fn alert_metric_v2(alert: &mut Map<String, Value>) -> Result<(), String> {
    match alert.get("metric").and_then(Value::as_str) {
        Some("input_drift" | "prediction_drift" | "latency_p95_ms") => Ok(()),
        other => Err(format!("{other:?} is not a version 1 metric")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_run() -> Value {
        json!({
            "run_id": "0190a0a0-0000-7000-8000-000000000001",
            "image_version": "onnx-cpu@1.32.0+p1",
            "ort_version": "1.22.0",
            "execution_provider": "CPUExecutionProvider",
            "intra_op_threads": 2,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization": "all",
            "cpu_class": "x86_64+avx2",
            "row_count": 3,
        })
    }

    #[test]
    fn versions_follow_the_steps() {
        assert_eq!(current("InferenceRunRecorded"), 5);
        assert_eq!(current("DeploymentCreated"), 2);
        assert_eq!(current("AlertRaised"), 2);
        assert_eq!(current("DriftThresholdsSet"), 2);
        assert_eq!(current("ProjectCreated"), 1);
        assert_eq!(current("NoSuchEvent"), 1);
    }

    #[test]
    fn a_v1_run_reads_as_the_current_version() {
        let v4 = upcast("InferenceRunRecorded", 1, v1_run()).unwrap();
        assert_eq!(
            v4,
            json!({
                "run_id": "0190a0a0-0000-7000-8000-000000000001",
                "image_id": "onnx-cpu",
                "image_version": "1.32.0+p1",
                "session": {
                    "ort_version": "1.22.0",
                    "execution_provider": "CPUExecutionProvider",
                    "intra_op_threads": 2,
                    "inter_op_threads": 1,
                    "execution_mode": "sequential",
                    "graph_optimization": "all",
                    "cpu_class": "x86_64+avx2",
                },
                "row_count": 3,
                "variant": "primary",
            })
        );
        // Version 2 reads as 3 unchanged (v3 only adds an optional field), and as 4 with the
        // one variant a deployment of version 1 had.
        let mut v2 = v4.clone();
        v2.as_object_mut().unwrap().remove("variant");
        assert_eq!(upcast("InferenceRunRecorded", 2, v2.clone()).unwrap(), v4);
        assert_eq!(upcast("InferenceRunRecorded", 3, v2.clone()).unwrap(), v4);
        assert_eq!(upcast("InferenceRunRecorded", 4, v4.clone()).unwrap(), v4);
        assert_eq!(upcast("InferenceRunRecorded", 5, v4.clone()).unwrap(), v4);
        let mut binned = v4.clone();
        binned["profile"] = json!({"reference_blob": "00", "columns": []});
        let e = upcast("InferenceRunRecorded", 4, binned).unwrap_err();
        assert!(e.to_string().contains("cannot carry a profile"), "{e}");
        let mut named = v2.clone();
        named["variant"] = json!("b");
        let e = upcast("InferenceRunRecorded", 3, named).unwrap_err();
        assert!(e.to_string().contains("cannot name a variant"), "{e}");
        let mut with_job = v2;
        with_job["job"] = json!({"job_id": "0190a0a0-0000-7000-8000-000000000002"});
        let e = upcast("InferenceRunRecorded", 2, with_job).unwrap_err();
        assert!(e.to_string().contains("cannot name a job"), "{e}");
    }

    #[test]
    fn a_v1_deployment_reads_as_one_primary_variant() {
        let spec = json!({"model_id": "m", "environment": "DEV"});
        let v1 = json!({"deployment_id": "d", "spec": spec});
        assert_eq!(
            upcast("DeploymentCreated", 1, v1).unwrap(),
            json!({
                "deployment_id": "d",
                "mode": "single",
                "variants": {"primary": {"weight": 1, "shadow": false, "spec": spec}},
                "promoted_from": null,
                "reason": null,
            })
        );
        let e = upcast("DeploymentCreated", 1, json!({"deployment_id": "d"})).unwrap_err();
        assert!(e.to_string().contains("spec is missing"), "{e}");
    }

    #[test]
    fn v1_alerts_and_thresholds_read_unchanged_and_cannot_name_what_came_later() {
        let policy = json!({"policy": {"window_minutes": 5, "input_drift": true}});
        assert_eq!(upcast("AlertPolicySet", 1, policy.clone()).unwrap(), policy);
        let later = json!({"policy": {"window_minutes": 5, "error_rate": 0.1}});
        let e = upcast("AlertPolicySet", 1, later).unwrap_err();
        assert!(e.to_string().contains("cannot watch error_rate"), "{e}");
        let thresholds = json!({"thresholds": {"p_value": 0.01}});
        let read = upcast("DriftThresholdsSet", 1, thresholds.clone()).unwrap();
        assert_eq!(read, thresholds);
        let later = json!({"thresholds": {"numeric_method": "psi"}});
        let e = upcast("DriftThresholdsSet", 1, later).unwrap_err();
        assert!(e.to_string().contains("cannot set numeric_method"), "{e}");
        let raised = json!({"metric": "latency_p95_ms"});
        assert_eq!(upcast("AlertRaised", 1, raised.clone()).unwrap(), raised);
        let e = upcast("AlertResolved", 1, json!({"metric": "rmse"})).unwrap_err();
        assert!(e.to_string().contains("not a version 1 metric"), "{e}");
    }

    #[test]
    fn a_v1_run_without_cpu_class_keeps_it_absent() {
        for absent in [None, Some(Value::Null)] {
            let mut run = v1_run();
            let map = run.as_object_mut().unwrap();
            map.remove("cpu_class");
            if let Some(v) = absent {
                map.insert("cpu_class".into(), v);
            }
            let v2 = upcast("InferenceRunRecorded", 1, run).unwrap();
            assert!(v2["session"].get("cpu_class").is_none());
        }
    }

    #[test]
    fn what_cannot_be_read_is_refused_by_name() {
        let newer = upcast("ProjectCreated", 2, json!({})).unwrap_err();
        assert!(matches!(newer, UpcastError::Newer { current: 1, .. }));
        assert!(newer.to_string().contains("upgrade Provenant"));
        assert!(matches!(
            upcast("ProjectCreated", 0, json!({})),
            Err(UpcastError::Unknown { .. })
        ));
        let mut run = v1_run();
        run["image_version"] = json!("no-version");
        let e = upcast("InferenceRunRecorded", 1, run).unwrap_err();
        assert!(e.to_string().contains("\"no-version\""), "{e}");
        let mut run = v1_run();
        run.as_object_mut().unwrap().remove("execution_mode");
        let e = upcast("InferenceRunRecorded", 1, run).unwrap_err();
        assert!(e.to_string().contains("execution_mode is missing"), "{e}");
        assert!(upcast("InferenceRunRecorded", 1, json!([])).is_err());
    }
}
