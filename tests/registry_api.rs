//! The registry over real HTTP: the full story, the authorization matrix, and bad inputs.

mod common;

use std::collections::BTreeSet;

use common::{Server, TEST_MAX_ARTIFACT, fixture};
use provenant::domain::RegistryEvent;
use provenant::log::{GENESIS_EVENT, ROTATION_EVENT};
use provenant::projections::registry::fold;
use serde_json::{Value, json};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

async fn create_user(srv: &Server, name: &str, roles: Value) -> (String, String) {
    let (st, u) = srv
        .call(
            "POST",
            "/api/v1/users",
            Some(&srv.admin_token),
            json!({"username": name, "roles": roles}),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    let id = s(&u["data"]["user_id"]);
    let (st, t) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{id}/tokens"),
            Some(&srv.admin_token),
            json!({"name": "tests"}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    (id, s(&t["data"]["token"]))
}

fn columns(schema: &Value) -> Vec<(String, String)> {
    schema
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (s(&c["name"]), s(&c["type"])))
        .collect()
}

/// Checks every stored payload against `schemas/<event_type>.json`; answers the types seen.
fn validate_payloads(srv: &Server) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for e in srv.ledger.read_all(0, usize::MAX).unwrap() {
        let u = &e.unsigned;
        let text = std::fs::read_to_string(format!("schemas/{}.json", u.event_type))
            .unwrap_or_else(|_| panic!("no schema for {}", u.event_type));
        let schema: Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&u.payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} at {}: {errors:?}",
            u.event_type,
            u.position
        );
        seen.insert(u.event_type.clone());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_registry_story() {
    let srv = Server::start().await;
    let root = srv.admin_token.clone();
    let (alice, alice_t) = create_user(&srv, "alice", json!([])).await;
    let (bob, bob_t) = create_user(&srv, "bob", json!([])).await;
    let (carol, carol_t) = create_user(&srv, "carol", json!([])).await;
    let (_aud, aud_t) = create_user(&srv, "audrey", json!(["auditor"])).await;
    let (mallory, mallory_t) = create_user(&srv, "mallory", json!([])).await;

    // A project, shared and re-shared; every mutation answers its events' positions and hashes.
    let (st, p) = srv
        .call(
            "POST",
            "/api/v1/projects",
            Some(&alice_t),
            json!({"name": "Wine quality", "description": "red wines"}),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let pid = s(&p["data"]["project_id"]);
    let ev = &p["events"][0];
    assert_eq!(
        (s(&ev["event_type"]), ev["hash"].as_str().map(str::len)),
        ("ProjectCreated".into(), Some(64))
    );
    let stored = srv
        .ledger
        .event(ev["position"].as_u64().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(stored.hash.to_hex(), s(&ev["hash"]));
    let project = format!("/api/v1/projects/{pid}");
    for (user, role) in [
        (&bob, "editor"),
        (&carol, "editor"),
        (&carol, "viewer"),
        (&mallory, "viewer"),
    ] {
        let (st, r) = srv
            .call(
                "PUT",
                &format!("{project}/members/{user}"),
                Some(&alice_t),
                json!({"role": role}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{project}/members/{mallory}"),
            Some(&alice_t),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);
    let (st, r) = srv
        .call(
            "DELETE",
            &format!("{project}/members/{alice}"),
            Some(&alice_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, s(&r["code"])),
        (409, "conflict".into()),
        "the last owner stays"
    );
    let (st, _) = srv
        .call(
            "PATCH",
            &project,
            Some(&bob_t),
            json!({"description": "red wines, 3 cultivars"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "POST",
            &format!("{project}/comments"),
            Some(&carol_t),
            json!({"text": "Please add the data sheet."}),
        )
        .await;
    assert_eq!(st, 201);

    // Experiments from real artifacts; the processor proposes their schemas.
    let (st, x1) = srv
        .import(&bob_t, &pid, json!({"display_name": "wine logistic", "tags": ["baseline"], "parameters": {"target_column": "cultivar"},
            "metadata": {"source_model_version": {"type": "string", "value": "7"}, "trained_rows": {"type": "int64", "value": 178}},
            "artifacts": [{"file": "wine_classifier.onnx", "type": "onnx"}]}), vec![("wine_classifier.onnx", fixture("wine_classifier.onnx"))])
        .await;
    assert_eq!(st, 201, "{x1}");
    let x1 = &x1["data"];
    let wine_columns = [
        "alcohol",
        "malic_acid",
        "ash",
        "alcalinity_of_ash",
        "magnesium",
        "total_phenols",
        "flavanoids",
        "nonflavanoid_phenols",
        "proanthocyanins",
        "color_intensity",
        "hue",
        "od280_od315_of_diluted_wines",
        "proline",
    ];
    let expected_inputs: Vec<(String, String)> = wine_columns
        .iter()
        .map(|c| (c.to_string(), "Float32".into()))
        .collect();
    assert_eq!(
        columns(&x1["metadata"]["input_schema"]["value"]),
        expected_inputs
    );
    assert_eq!(
        columns(&x1["metadata"]["output_schema"]["value"]),
        [
            ("label", "Int64"),
            ("probabilities.0", "Float32"),
            ("probabilities.1", "Float32"),
            ("probabilities.2", "Float32")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let ing = &x1["artifacts"][0]["ingestion"];
    assert_eq!(
        (ing["deployable"].as_bool(), s(&ing["model_type"])),
        (Some(true), "onnx".into())
    );
    assert_eq!(
        (
            s(&ing["details"]["producer"]),
            ing["details"]["opsets"]["ai.onnx"].as_u64()
        ),
        ("skl2onnx".into(), Some(17))
    );
    assert_eq!(
        s(&x1["artifacts"][0]["blob_hash"]),
        blake3::hash(&fixture("wine_classifier.onnx"))
            .to_hex()
            .to_string()
    );
    let x1_id = s(&x1["experiment_id"]);

    let (st, x2) = srv
        .import(&bob_t, &pid, json!({"display_name": "wine mlflow", "artifacts": [{"file": "wine_mlflow.zip", "type": "python/mlflow"}]}), vec![("wine_mlflow.zip", fixture("wine_mlflow.zip"))])
        .await;
    assert_eq!(st, 201, "{x2}");
    let x2 = &x2["data"];
    assert_eq!(
        columns(&x2["metadata"]["input_schema"]["value"]),
        expected_inputs
    );
    assert_eq!(
        columns(&x2["metadata"]["output_schema"]["value"]),
        ["class.class_0", "class.class_1", "class.class_2"]
            .map(|c| (c.to_string(), "Float32".to_string()))
    );
    let ing = &x2["artifacts"][0]["ingestion"];
    assert_eq!(
        (ing["deployable"].as_bool(), s(&ing["model_type"])),
        (Some(true), "onnx".into())
    );
    assert_eq!(s(&ing["details"]["schema_source"]), "mlflow_signature");
    let inner =
        provenant::log::envelope::Digest::from_hex(ing["model_blob"].as_str().unwrap()).unwrap();
    assert!(
        srv.state.blobs.contains(&inner),
        "the MLflow zip's ONNX model is a blob of its own"
    );
    let x2_id = s(&x2["experiment_id"]);

    let (st, x3) = srv
        .import(&bob_t, &pid, json!({"display_name": "diabetes forest", "artifacts": [{"file": "forest.onnx", "type": "onnx"}]}), vec![("forest.onnx", fixture("diabetes_forest.onnx"))])
        .await;
    assert_eq!(st, 201, "{x3}");
    let x3 = &x3["data"];
    let diabetes = [
        "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
    ];
    assert_eq!(
        columns(&x3["metadata"]["input_schema"]["value"]),
        diabetes.map(|c| (c.to_string(), "Float32".to_string()))
    );
    assert_eq!(
        columns(&x3["metadata"]["output_schema"]["value"]),
        [("variable".to_string(), "Float32".to_string())]
    );
    let x3_id = s(&x3["experiment_id"]);

    let (st, x4) = srv
        .import(&bob_t, &pid, json!({"display_name": "legacy mojo", "artifacts": [{"file": "pipeline.mojo", "type": "dai/mojo_pipeline"}]}), vec![("pipeline.mojo", b"PK not really a mojo".to_vec())])
        .await;
    assert_eq!(st, 201, "{x4}");
    let ing = &x4["data"]["artifacts"][0]["ingestion"];
    assert_eq!(ing["deployable"].as_bool(), Some(false));
    assert!(s(&ing["reason"]).contains("dai/mojo_pipeline"));
    let x4_id = s(&x4["data"]["experiment_id"]);

    // Experiment housekeeping.
    let xp = |id: &str| format!("/api/v1/experiments/{id}");
    for (m, path, body) in [
        (
            "PATCH",
            format!("{}/metadata", xp(&x3_id)),
            json!({"entries": {"owner_team": {"type": "string", "value": "clinical"}}}),
        ),
        (
            "POST",
            format!("{}/tags", xp(&x3_id)),
            json!({"tag": "regression"}),
        ),
        (
            "POST",
            format!("{}/tags", xp(&x3_id)),
            json!({"tag": "tmp"}),
        ),
        ("DELETE", format!("{}/tags/tmp", xp(&x3_id)), Value::Null),
        ("DELETE", xp(&x4_id), json!({"reason": "cannot run here"})),
        ("POST", format!("{}/restore", xp(&x4_id)), Value::Null),
        ("DELETE", xp(&x4_id), Value::Null),
    ] {
        let (st, r) = srv.call(m, &path, Some(&bob_t), body).await;
        assert!(st == 200 || st == 201, "{m} {path}: {st} {r}");
    }
    let (_, r) = srv
        .call(
            "POST",
            &format!("{}/comments", xp(&x1_id)),
            Some(&aud_t),
            json!({"text": "Audit: training data lineage checked."}),
        )
        .await;
    assert!(r["data"]["comment_id"].is_string(), "auditors comment: {r}");
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?tag=baseline"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            list["total"].as_u64(),
            s(&list["items"][0]["experiment_id"])
        ),
        (Some(1), x1_id.clone())
    );
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?limit=2"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (list["total"].as_u64(), list["next_offset"].as_u64()),
        (Some(3), Some(2)),
        "the deleted one is hidden"
    );
    let (_, list) = srv
        .call(
            "GET",
            &format!("{project}/experiments?include_deleted=true&offset=2"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            list["items"].as_array().map(Vec::len),
            list["next_offset"].clone()
        ),
        (Some(2), Value::Null)
    );

    // The registered model: v1 and v2, staged, aliased, commented.
    let (st, m) = srv
        .call(
            "POST",
            &format!("{project}/models"),
            Some(&bob_t),
            json!({"name": "wine-classifier"}),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let model = format!("/api/v1/models/{}", s(&m["data"]["model_id"]));
    for (x, note) in [(&x1_id, "first model"), (&x2_id, "MLflow packaging")] {
        let (st, v) = srv
            .call(
                "POST",
                &format!("{model}/versions"),
                Some(&bob_t),
                json!({"experiment_id": x, "annotation": note}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, r) = srv
        .call(
            "POST",
            &format!("{model}/versions"),
            Some(&bob_t),
            json!({"experiment_id": x1_id}),
        )
        .await;
    assert_eq!((st, s(&r["code"])), (409, "already_exists".into()));
    for (stage, why) in [
        ("Staging", "passed offline validation"),
        ("Production", "approved by the model risk board"),
    ] {
        let (st, r) = srv
            .call(
                "PUT",
                &format!("{model}/versions/1/stage"),
                Some(&bob_t),
                json!({"stage": stage, "annotation": why}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
    }
    let (st, _) = srv
        .call(
            "PUT",
            &format!("{model}/aliases/champion"),
            Some(&bob_t),
            json!({"version": 1, "annotation": "current best"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "PUT",
            &format!("{model}/aliases/challenger"),
            Some(&bob_t),
            json!({"version": 2, "annotation": "shadow it"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{model}/aliases/challenger"),
            Some(&bob_t),
            json!({"annotation": "shadow ended"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "POST",
            &format!("{model}/versions/2/comments"),
            Some(&carol_t),
            json!({"text": "Same model, MLflow packaging."}),
        )
        .await;
    assert_eq!(st, 201);
    let (_, prod) = srv
        .call(
            "GET",
            &format!("{model}/versions?stage=Production"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (prod["total"].as_u64(), prod["items"][0]["version"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v1) = srv
        .call(
            "GET",
            &format!("{model}/versions/1"),
            Some(&aud_t),
            Value::Null,
        )
        .await;
    assert_eq!(
        (
            v1["stage_history"].as_array().map(Vec::len),
            v1["aliases"].clone()
        ),
        (Some(2), json!(["champion"]))
    );
    let (st, _) = srv
        .call(
            "POST",
            &format!("{}/versions", model),
            Some(&bob_t),
            json!({"experiment_id": x3_id}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("{model}/versions/3"),
            Some(&bob_t),
            json!({"annotation": "wrong model family"}),
        )
        .await;
    assert_eq!(st, 200);

    // Tokens and roles: a revoked token stops working at once.
    let (_, t) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{mallory}/tokens"),
            Some(&mallory_t),
            json!({"name": "laptop", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let laptop = s(&t["data"]["token"]);
    let laptop_id = s(&t["data"]["token_id"]);
    let (st, _) = srv
        .call("GET", "/api/v1/me", Some(&laptop), Value::Null)
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/api/v1/users/{mallory}/tokens/{laptop_id}"),
            Some(&mallory_t),
            json!({"reason": "lost"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, r) = srv
        .call("GET", "/api/v1/me", Some(&laptop), Value::Null)
        .await;
    assert_eq!((st, s(&r["code"])), (401, "token_revoked".into()));
    let (st, _) = srv
        .call(
            "POST",
            &format!("/api/v1/users/{carol}/roles"),
            Some(&root),
            json!({"role": "auditor"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/api/v1/users/{carol}/roles/auditor"),
            Some(&root),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);

    // Who sees what.
    let (_, mine) = srv
        .call("GET", "/api/v1/projects", Some(&mallory_t), Value::Null)
        .await;
    assert_eq!(mine["total"].as_u64(), Some(0));
    let (_, all) = srv
        .call(
            "GET",
            "/api/v1/projects?name=WINE",
            Some(&aud_t),
            Value::Null,
        )
        .await;
    assert_eq!(all["total"].as_u64(), Some(1));

    // The project's events tab: every event of the project, its experiments and its model, in order.
    let (_, events) = srv
        .call(
            "GET",
            &format!("{project}/events?limit=500"),
            Some(&carol_t),
            Value::Null,
        )
        .await;
    let items = events["items"].as_array().unwrap();
    let positions: Vec<u64> = items
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s(&items[0]["event_type"]), "ProjectCreated");
    assert!(
        items
            .iter()
            .all(|e| !s(&e["event_type"]).starts_with("User")
                && !s(&e["event_type"]).starts_with("ApiToken"))
    );
    assert_eq!(items.len() as u64, events["total"].as_u64().unwrap());

    // Every event type was appended, and each stored payload matches its schema.
    srv.ledger.rotate_key("system:test").await.unwrap();
    let seen = validate_payloads(&srv);
    let all_types: BTreeSet<String> = RegistryEvent::TYPES
        .iter()
        .chain(&[GENESIS_EVENT, ROTATION_EVENT])
        .map(|t| t.to_string())
        .collect();
    assert_eq!(seen, all_types);

    // Rebuilt from position 0, the registry equals the one the projection kept current.
    srv.state.registry.wait_for(srv.size()).await.unwrap();
    let rebuilt = fold(srv.ledger.read_all(0, usize::MAX).unwrap()).unwrap();
    assert_eq!(rebuilt, *srv.state.registry.read());
}
