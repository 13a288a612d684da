//! `/graphql` over real HTTP: the registry and its relations, as-of queries, the audit trail's
//! filters and pagination under concurrent appends, predictions, proofs, mutations, the
//! authorization matrix, limits and malformed requests.

mod common;

use common::{Server, create_user, deployed_wine, s, score};
use provenant::log::merkle;
use serde_json::{Value, json};

/// A project with the wine classifier registered and deployed, and `n` scored requests:
/// (project id, model id, deployment id, request ids).
async fn deployed(srv: &Server, n: usize) -> (String, String, String, Vec<String>) {
    let (pid, mid, d) = deployed_wine(srv, "graphql").await;
    let dep = s(&d["data"]["deployment_id"]);
    let wine: Value = serde_json::from_str(
        &std::fs::read_to_string("fixtures/models/wine_classifier.expected.json").unwrap(),
    )
    .unwrap();
    let mut requests = Vec::new();
    for i in 0..n {
        let rows = &wine["rows"].as_array().unwrap()[i % 2..i % 2 + 1 + i % 3];
        let (st, headers, body) =
            score(srv, &dep, json!({"fields": wine["fields"], "rows": rows})).await;
        assert_eq!(st, 200, "{body}");
        requests.push(
            headers["provenant-request-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    (pid, mid, dep, requests)
}

/// The `data` of a successful response.
fn data(r: &(u16, Value)) -> &Value {
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1.get("errors").is_none(), "{}", r.1);
    &r.1["data"]
}

/// The code of the first error of a response.
fn code(r: &(u16, Value)) -> String {
    assert_eq!(r.0, 200, "{}", r.1);
    s(&r.1["errors"][0]["extensions"]["code"])
}

/// Every event over REST, the ground truth for the audit index.
async fn all_events(srv: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let path = format!("/api/v1/ledger/events?from={}&limit=1000", out.len());
        let (st, page) = srv
            .call("GET", &path, Some(&srv.admin_token), Value::Null)
            .await;
        assert_eq!(st, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

const EVENTS: &str = "query($f: EventFilter, $first: Int, $after: String) {
  events(filter: $f, first: $first, after: $after) {
    edges { cursor node { position eventType actor stream hash signature keyId recordedAt } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// Every position `filter` selects, paging `first` at a time.
async fn paged(srv: &Server, token: &str, filter: Value, first: usize) -> Vec<u64> {
    let mut positions = Vec::new();
    let mut after = Value::Null;
    loop {
        let vars = json!({"f": filter, "first": first, "after": after});
        let r = srv.graphql(token, EVENTS, vars).await;
        let page = &data(&r)["events"];
        let edges = page["edges"].as_array().unwrap();
        assert!(edges.len() <= first);
        for e in edges {
            positions.push(e["node"]["position"].as_u64().unwrap());
            assert_eq!(e["cursor"], json!(e["node"]["position"].to_string()));
        }
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return positions;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_relations_navigate_both_ways_and_answer_as_of_the_past() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, mid, dep, _) = deployed(&srv, 2).await;
    let before_stage = srv.size() - 1;
    let (st, x) = srv
        .call(
            "PUT",
            &format!("/api/v1/models/{mid}/versions/1/stage"),
            Some(&t),
            json!({"stage": "Staging", "annotation": "validated"}),
        )
        .await;
    assert_eq!(st, 200, "{x}");
    let q = "query($p: ID!, $at: String) {
      project(id: $p, asOf: $at) {
        name members { role user { username roles } }
        models { name versions {
          version stage stageHistory { from to annotation changed { actor position } }
          experiment { id displayName artifacts { fileName blobHash size } inputSchema
                       registeredAs { version model { name } } project { name } }
          deployments { id state environment runtimeId imageVersion onnxruntimeVersion
                        history { to } modelVersion { version } project { name } }
        } }
        deployments { id }
      }
    }";
    let now = srv.graphql(&t, q, json!({"p": pid})).await;
    let p = &data(&now)["project"];
    assert_eq!(p["name"], "graphql");
    assert_eq!(p["members"][0]["role"], "owner");
    assert_eq!(p["members"][0]["user"]["username"], "root");
    let v = &p["models"][0]["versions"][0];
    assert_eq!(v["stage"], "Staging");
    assert_eq!(v["stageHistory"][0]["to"], "Staging");
    assert_eq!(v["stageHistory"][0]["annotation"], "validated");
    let x = &v["experiment"];
    assert_eq!(x["registeredAs"]["version"], 1);
    assert_eq!(x["registeredAs"]["model"]["name"], "wine_classifier.onnx");
    assert_eq!(x["project"]["name"], "graphql");
    assert_eq!(x["artifacts"][0]["blobHash"].as_str().unwrap().len(), 64);
    assert!(x["inputSchema"].as_array().unwrap().len() == 13, "{x}");
    let d = &v["deployments"][0];
    assert_eq!(d["id"], json!(dep));
    assert_eq!(d["state"], "Healthy");
    assert_eq!(d["runtimeId"], "onnx-runtime");
    assert_eq!(d["onnxruntimeVersion"], "1.32.0");
    assert_eq!(d["modelVersion"]["version"], 1);
    assert_eq!(d["project"]["name"], "graphql");
    let states: Vec<&Value> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["to"])
        .collect();
    assert_eq!(
        states,
        [&json!("Preparing"), &json!("Launching"), &json!("Healthy")]
    );
    assert_eq!(p["deployments"][0]["id"], json!(dep));

    // As of the position before the stage change, by position and by time.
    let then = srv
        .graphql(&t, q, json!({"p": pid, "at": before_stage.to_string()}))
        .await;
    let v_then = &data(&then)["project"]["models"][0]["versions"][0];
    assert_eq!(v_then["stage"], "None");
    assert_eq!(v_then["stageHistory"], json!([]));
    let (_, e) = srv
        .call(
            "GET",
            &format!("/api/v1/ledger/events/{before_stage}"),
            Some(&t),
            Value::Null,
        )
        .await;
    let at = s(&e["recorded_at"]);
    let by_time = srv.graphql(&t, q, json!({"p": pid, "at": at})).await;
    // Events of the same instant are all included, so a time may include the change.
    let stage = &data(&by_time)["project"]["models"][0]["versions"][0]["stage"];
    assert!(stage == "None" || stage == "Staging");
    // Before the project existed there is no project.
    let before = srv.graphql(&t, q, json!({"p": pid, "at": "0"})).await;
    assert_eq!(data(&before)["project"], Value::Null);

    // From the deployment back up, and the catalog with both sources' states.
    let q = "query($d: ID!) {
      deployment(id: $d) { modelVersion { model { id versions { deployments { id } } } } }
      runtimes { runtimes { id effectiveState managedBy bootstrapState { state } apiState { state } }
                 imageVersions { id effectiveState } }
      models { id }
      me { username roles }
    }";
    let r = srv.graphql(&t, q, json!({"d": dep})).await;
    let r = data(&r);
    assert_eq!(r["deployment"]["modelVersion"]["model"]["id"], json!(mid));
    assert_eq!(
        r["deployment"]["modelVersion"]["model"]["versions"][0]["deployments"][0]["id"],
        json!(dep)
    );
    let onnx = r["runtimes"]["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "onnx-runtime")
        .unwrap();
    assert_eq!(onnx["managedBy"], "bootstrap");
    assert!(onnx["bootstrapState"]["state"].is_string());
    assert!(onnx["effectiveState"].is_string());
    assert_eq!(r["me"]["roles"], json!(["admin"]));
    assert_eq!(r["models"].as_array().unwrap().len(), 1);

    // Aliases, comments and tags, by model and experiment id.
    let xid = s(&data(&now)["project"]["models"][0]["versions"][0]["experiment"]["id"]);
    for (method, path, body) in [
        (
            "PUT",
            format!("/api/v1/models/{mid}/aliases/champion"),
            json!({"version": 1, "annotation": "best"}),
        ),
        (
            "POST",
            format!("/api/v1/models/{mid}/versions/1/comments"),
            json!({"text": "signed off"}),
        ),
        (
            "POST",
            format!("/api/v1/experiments/{xid}/comments"),
            json!({"text": "data checked"}),
        ),
        (
            "POST",
            format!("/api/v1/experiments/{xid}/tags"),
            json!({"tag": "audited"}),
        ),
    ] {
        let (st, x) = srv.call(method, &path, Some(&t), body).await;
        assert!(st == 200 || st == 201, "{path}: {x}");
    }
    let q = "query($m: ID!, $x: ID!) {
      model(id: $m) { aliases { alias version } aliasHistory { alias version annotation }
                      version(version: 1) { aliases comments { text added { actor } } } }
      experiment(id: $x) { displayName tags comments { text } imported { position } }
    }";
    let r = srv.graphql(&t, q, json!({"m": mid, "x": xid})).await;
    let r = data(&r);
    assert_eq!(
        r["model"]["aliases"],
        json!([{"alias": "champion", "version": 1}])
    );
    assert_eq!(r["model"]["aliasHistory"][0]["annotation"], "best");
    assert_eq!(r["model"]["version"]["aliases"], json!(["champion"]));
    assert_eq!(r["model"]["version"]["comments"][0]["text"], "signed off");
    assert_eq!(r["experiment"]["tags"], json!(["audited"]));
    assert_eq!(r["experiment"]["comments"][0]["text"], "data checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_filters_like_a_scan_and_pages_without_gaps_while_events_arrive() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, mid, dep, _) = deployed(&srv, 3).await;
    let (uid, other) = create_user(&srv, "commenter", json!([])).await;
    let (st, x) = srv
        .call(
            "PUT",
            &format!("/api/v1/projects/{pid}/members/{uid}"),
            Some(&t),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(st, 200, "{x}");
    let all = all_events(&srv).await;
    let times: Vec<String> = all.iter().map(|e| s(&e["recorded_at"])).collect();
    let mid_time = times[all.len() / 2].clone();
    let admin = s(&all[all.len() - 1]["actor"]);
    let dep_stream = format!("deployment-{dep}");
    let cases = [
        (json!({}), None),
        (json!({"actor": admin}), None),
        (json!({"actor": "nobody"}), None),
        (json!({"stream": dep_stream}), None),
        (json!({"entityId": mid}), None),
        (
            json!({"entityId": pid, "eventTypes": ["ProjectShared", "ProjectCreated"]}),
            None,
        ),
        (
            json!({"eventTypes": ["InferenceRunRecorded", "DeploymentStateChanged"]}),
            None,
        ),
        (json!({"from": mid_time}), None),
        (json!({"to": mid_time, "positionFrom": 3}), None),
        (json!({"positionFrom": 5, "positionTo": 11}), None),
        (
            json!({"entityId": dep, "from": times[0], "to": times[times.len() - 2]}),
            None,
        ),
        (json!({"eventTypes": ["NoSuchType"]}), Some(0)),
    ];
    for (filter, expect_len) in cases {
        let want: Vec<u64> = all
            .iter()
            .filter(|e| {
                let f = |k: &str| filter.get(k);
                let ids = |e: &Value| {
                    let mut v = vec![
                        e["stream"]
                            .as_str()
                            .unwrap()
                            .split_once('-')
                            .map(|x| x.1.to_string())
                            .unwrap_or_default(),
                    ];
                    fn walk(x: &Value, out: &mut Vec<String>) {
                        if let Some(o) = x.as_object() {
                            for (k, v) in o {
                                match v {
                                    Value::String(s) if k.ends_with("_id") && k != "run_id" => {
                                        out.push(s.clone())
                                    }
                                    Value::Object(_) => walk(v, out),
                                    _ => {}
                                }
                            }
                        }
                    }
                    walk(&e["payload"], &mut v);
                    v
                };
                f("actor").is_none_or(|a| e["actor"] == *a)
                    && f("stream").is_none_or(|x| e["stream"] == *x)
                    && f("eventTypes")
                        .is_none_or(|ts| ts.as_array().unwrap().contains(&e["event_type"]))
                    && f("entityId").is_none_or(|id| ids(e).contains(&s(id)))
                    && f("from").is_none_or(|t| s(&e["recorded_at"]) >= s(t))
                    && f("to").is_none_or(|t| s(&e["recorded_at"]) <= s(t))
                    && f("positionFrom").is_none_or(|p| e["position"].as_u64() >= p.as_u64())
                    && f("positionTo").is_none_or(|p| e["position"].as_u64() <= p.as_u64())
            })
            .map(|e| e["position"].as_u64().unwrap())
            .collect();
        if let Some(n) = expect_len {
            assert_eq!(want.len(), n);
        } else if filter != json!({"actor": "nobody"}) {
            assert!(!want.is_empty(), "{filter} selects nothing to compare");
        }
        for first in [1, 4, 100] {
            assert_eq!(
                paged(&srv, &t, filter.clone(), first).await,
                want,
                "{filter} by {first}"
            );
        }
    }

    // Page through comments while another caller keeps commenting: every comment once, in
    // order, none missed.
    let writer = {
        let (http, base, other, pid) = (
            srv.http.clone(),
            srv.base.clone(),
            other.clone(),
            pid.clone(),
        );
        tokio::spawn(async move {
            for i in 0..30 {
                let r = http
                    .post(format!("{base}/api/v1/projects/{pid}/comments"))
                    .bearer_auth(&other)
                    .json(&json!({"text": format!("note {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            }
        })
    };
    let filter = json!({"eventTypes": ["CommentAdded"]});
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        // Whether the writer was done before this page was read: only then may an empty
        // next page end the loop.
        let finished = writer.is_finished();
        let vars = json!({"f": filter, "first": 3, "after": after});
        let r = srv.graphql(&t, EVENTS, vars).await;
        let page = &data(&r)["events"];
        for e in page["edges"].as_array().unwrap() {
            seen.push(e["node"]["position"].as_u64().unwrap());
        }
        if !page["pageInfo"]["endCursor"].is_null() {
            after = page["pageInfo"]["endCursor"].clone();
        }
        if finished && !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
    }
    writer.await.unwrap();
    let comments: Vec<u64> = all_events(&srv)
        .await
        .iter()
        .filter(|e| e["event_type"] == "CommentAdded")
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(comments.len(), 30);
    assert_eq!(seen, comments);

    // The project's own event list pages too, for its readers.
    let q = "query($p: ID!, $after: String) { project(id: $p) { events(first: 5, after: $after) {
        edges { node { position } } pageInfo { hasNextPage endCursor } } } }";
    let mut listed = Vec::new();
    let mut after = Value::Null;
    loop {
        let r = srv
            .graphql(&other, q, json!({"p": pid, "after": after}))
            .await;
        let page = &data(&r)["project"]["events"];
        listed.extend(
            page["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["position"].as_u64().unwrap()),
        );
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    assert!(comments.iter().all(|c| listed.contains(c)));

    // A projection started on the log now (replaying it) holds what the server's, which
    // followed the events as they came, holds.
    use provenant::projections::audit::Filter;
    let replayed = provenant::projections::registry::RegistryProjection::start(&srv.ledger)
        .await
        .unwrap();
    assert_eq!(*replayed.read(), *srv.state.registry.read());
    for f in [
        Filter::default(),
        Filter {
            actor: Some(admin.clone()),
            ..Filter::default()
        },
        Filter {
            entity_id: Some(pid.clone()),
            ..Filter::default()
        },
        Filter {
            entity_id: Some(dep.clone()),
            event_types: vec!["InferenceRunRecorded".into()],
            ..Filter::default()
        },
    ] {
        let page = |p: &provenant::projections::registry::RegistryProjection| {
            p.audit().page(&f, None, 1000)
        };
        assert_eq!(page(&replayed), page(&srv.state.registry), "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_proofs_and_verification() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (_, _, dep, requests) = deployed(&srv, 5).await;
    let q = "query($d: ID!, $after: String) {
      predictions(deploymentId: $d, first: 2, after: $after) {
        edges { cursor node { requestId rowCount inputHash outputHash receipt { position eventHash signature keyId } } }
        pageInfo { hasNextPage endCursor }
      }
    }";
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let r = srv.graphql(&t, q, json!({"d": dep, "after": after})).await;
        let page = &data(&r)["predictions"];
        for e in page["edges"].as_array().unwrap() {
            ids.push(s(&e["node"]["requestId"]));
            assert_eq!(e["node"]["inputHash"].as_str().unwrap().len(), 64);
        }
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(ids, requests);
    // A time range after every run selects none.
    let q2 = "query($d: ID!, $from: String) { predictions(deploymentId: $d, from: $from) { edges { cursor } } }";
    let r = srv
        .graphql(&t, q2, json!({"d": dep, "from": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(data(&r)["predictions"]["edges"], json!([]));

    // One prediction, its rows, and the inclusion proof of its run's event against the head.
    let q = "query($r: ID!) {
      prediction(requestId: $r) {
        requestId rowOffset rowCount caller deploymentId version
        receipt { position eventHash signature keyId }
        rows { inputFields inputs outputFields outputs }
      }
      ledger { head { size root checkpoint } keys { keyId publicKey validFrom } }
    }";
    let r = srv.graphql(&t, q, json!({"r": requests[2]})).await;
    let r = data(&r);
    let p = &r["prediction"];
    assert_eq!(p["requestId"], json!(requests[2]));
    assert_eq!(p["rowCount"], 3);
    assert_eq!(p["rows"]["inputs"].as_array().unwrap().len(), 3);
    assert_eq!(p["rows"]["outputs"].as_array().unwrap().len(), 3);
    assert_eq!(p["rows"]["inputFields"].as_array().unwrap().len(), 13);
    let position = p["receipt"]["position"].as_u64().unwrap();
    let size = r["ledger"]["head"]["size"].as_u64().unwrap();
    let q = "query($p: Int!, $n: Int) {
      event(position: $p) { hash inclusionProof(treeSize: $n) { leafHash path root treeSize } }
      ledger {
        consistencyProof(from: 3, to: $n) { path rootFrom rootTo }
        signedTreeHeads(first: 2) { treeSize checkpoint }
        verify(from: 2, to: $p) { intact rangeIntact events failurePosition }
      }
    }";
    let r = srv.graphql(&t, q, json!({"p": position, "n": size})).await;
    let r = data(&r);
    assert_eq!(r["event"]["hash"], p["receipt"]["eventHash"]);
    let node = |v: &Value| -> [u8; 32] { hex::decode(s(v)).unwrap().try_into().unwrap() };
    let proof = &r["event"]["inclusionProof"];
    let path: Vec<[u8; 32]> = proof["path"].as_array().unwrap().iter().map(node).collect();
    merkle::verify_inclusion(
        position,
        size,
        &node(&proof["leafHash"]),
        &path,
        &node(&proof["root"]),
    )
    .unwrap();
    assert_eq!(proof["root"], r["ledger"]["consistencyProof"]["rootTo"]);
    let c = &r["ledger"]["consistencyProof"];
    let cpath: Vec<[u8; 32]> = c["path"].as_array().unwrap().iter().map(node).collect();
    merkle::verify_consistency(3, size, &cpath, &node(&c["rootFrom"]), &node(&c["rootTo"]))
        .unwrap();
    assert_eq!(r["ledger"]["signedTreeHeads"].as_array().unwrap().len(), 2);
    let v = &r["ledger"]["verify"];
    assert_eq!(
        (v["intact"].clone(), v["rangeIntact"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(v["events"].as_u64(), Some(size));
    // An unknown request is null, not an error.
    let q = "query($r: ID!) { prediction(requestId: $r) { requestId } }";
    let r = srv
        .graphql(&t, q, json!({"r": "00000000-0000-7000-8000-000000000000"}))
        .await;
    assert_eq!(data(&r)["prediction"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_comment_reproduce_and_export_and_rejections_append_nothing() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, mid, dep, requests) = deployed(&srv, 2).await;

    let q = "mutation($s: CommentSubject!, $text: String!) {
      addComment(subject: $s, text: $text) {
        comment { id text added { actor position } } events { position eventType hash } checkpointSize
      }
    }";
    let before = srv.size();
    let r = srv
        .graphql(
            &t,
            q,
            json!({"s": {"modelId": mid, "version": 1}, "text": "reviewed"}),
        )
        .await;
    let c = &data(&r)["addComment"];
    assert_eq!(c["comment"]["text"], "reviewed");
    assert_eq!(c["events"][0]["eventType"], "CommentAdded");
    assert_eq!(c["events"][0]["position"].as_u64(), Some(before));
    assert_eq!(srv.size(), before + 1);
    // Rejected: two subjects, an unknown one, an empty text. None appends.
    let bad = [
        (
            json!({"s": {"projectId": pid, "modelId": mid}, "text": "x"}),
            "invalid_argument",
        ),
        (
            json!({"s": {"projectId": "00000000-0000-7000-8000-000000000000"}, "text": "x"}),
            "project_not_found",
        ),
        (
            json!({"s": {"projectId": pid}, "text": ""}),
            "invalid_field",
        ),
        (
            json!({"s": {"projectId": "nope"}, "text": "x"}),
            "invalid_id",
        ),
    ];
    for (vars, want) in bad {
        let r = srv.graphql(&t, q, vars.clone()).await;
        assert_eq!(code(&r), want, "{vars}: {}", r.1);
        assert_eq!(srv.size(), before + 1);
    }

    let q = "mutation($r: ID!, $o: JSON) { reproducePrediction(requestId: $r, overrides: $o) { verdict report } }";
    let r = srv.graphql(&t, q, json!({"r": requests[1]})).await;
    assert_eq!(data(&r)["reproducePrediction"]["verdict"], "identical");
    let r = srv
        .graphql(&t, q, json!({"r": requests[1], "o": {"threads": 3}}))
        .await;
    assert_eq!(code(&r), "invalid_overrides");

    let q = "mutation($x: ExportRequest!) { requestExport(request: $x) { exportId url bytes blake3 rows treeSize format } }";
    let r = srv
        .graphql(
            &t,
            q,
            json!({"x": {"format": "AUDIT_BUNDLE", "deploymentId": dep}}),
        )
        .await;
    let x = &data(&r)["requestExport"];
    let size = srv.size();
    assert_eq!(x["treeSize"].as_u64(), Some(size));
    let bytes = srv
        .http
        .get(format!("{}{}", srv.base, s(&x["url"])))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, x["bytes"].as_u64().unwrap());
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), s(&x["blake3"]));
    let report =
        provenant::log::bundle::verify(std::io::Cursor::new(bytes.to_vec()), None, &mut |_, _| {})
            .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.events, x["rows"].as_u64().unwrap());
    let r = srv
        .graphql(
            &t,
            q,
            json!({"x": {"format": "PREDICTIONS_CSV", "deploymentId": dep}}),
        )
        .await;
    let x = &data(&r)["requestExport"];
    assert_eq!(x["rows"].as_u64(), Some(requests.len() as u64));
    let r = srv
        .graphql(
            &t,
            q,
            json!({"x": {"format": "AUDIT_BUNDLE", "projectId": pid, "deploymentId": dep}}),
        )
        .await;
    assert_eq!(code(&r), "invalid_argument");
    // The same through REST.
    let body = json!({"format": "predictions_parquet", "deployment_id": dep});
    let (st, x) = srv.call("POST", "/api/v1/exports", Some(&t), body).await;
    assert_eq!(st, 201, "{x}");
    assert_eq!(x["rows"].as_u64(), Some(requests.len() as u64));
    let (st, x) = srv
        .call(
            "POST",
            "/api/v1/exports",
            Some(&t),
            json!({"format": "tarball"}),
        )
        .await;
    assert_eq!((st, s(&x["code"])), (422, "invalid_body".to_string()));
    assert_eq!(srv.size(), size, "exports append nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_limits_and_malformed_requests() {
    let srv = Server::start().await;
    let t = srv.admin_token.clone();
    let (pid, _, dep, requests) = deployed(&srv, 1).await;
    let (viewer_id, viewer) = create_user(&srv, "viewer", json!([])).await;
    let (_, outsider) = create_user(&srv, "outsider", json!([])).await;
    let (_, auditor) = create_user(&srv, "auditor", json!(["auditor"])).await;
    let (st, x) = srv
        .call(
            "PUT",
            &format!("/api/v1/projects/{pid}/members/{viewer_id}"),
            Some(&t),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(st, 200, "{x}");
    let projects = "{ projects { id } }";
    let project = "query($p: ID!) { project(id: $p) { name } }";
    let events = "{ events(first: 1) { edges { cursor } } }";
    let prediction = "query($r: ID!) { prediction(requestId: $r) { requestId } }";
    let rows = "query($r: ID!) { prediction(requestId: $r) { rows { inputs } } }";
    let predictions = "query($d: ID!) { predictions(deploymentId: $d) { edges { cursor } } }";
    let verify = "{ ledger { verify { intact } } }";
    let export_all = "mutation { requestExport(request: {format: AUDIT_BUNDLE}) { exportId } }";
    let export_project = "mutation($p: UUID!) { requestExport(request: {format: AUDIT_BUNDLE, projectId: $p}) { exportId url } }";
    let vars = json!({"p": pid, "r": requests[0], "d": dep});
    // (query, [admin, auditor, viewer, outsider]): "ok", "null", "empty" or an error code.
    let matrix: [(&str, [&str; 4]); 9] = [
        (projects, ["ok", "ok", "ok", "empty"]),
        (project, ["ok", "ok", "ok", "null"]),
        (events, ["ok", "ok", "forbidden", "forbidden"]),
        (prediction, ["ok", "ok", "ok", "null"]),
        (rows, ["ok", "ok", "forbidden", "null"]),
        (predictions, ["ok", "ok", "ok", "deployment_not_found"]),
        (verify, ["ok", "ok", "forbidden", "forbidden"]),
        (export_all, ["ok", "ok", "forbidden", "forbidden"]),
        (export_project, ["ok", "ok", "ok", "not_found"]),
    ];
    for (query, wants) in matrix {
        for (token, want) in [&t, &auditor, &viewer, &outsider].into_iter().zip(wants) {
            let r = srv.graphql(token, query, vars.clone()).await;
            assert_eq!(r.0, 200);
            let got = match (
                r.1.get("errors"),
                r.1["data"].as_object().and_then(|d| d.values().next()),
            ) {
                (Some(e), _) => s(&e[0]["extensions"]["code"]),
                (None, Some(Value::Null)) => "null".into(),
                (None, Some(Value::Array(a))) if a.is_empty() => "empty".into(),
                (None, Some(Value::Object(o))) if o.values().next() == Some(&Value::Null) => {
                    "null".into()
                }
                _ => "ok".into(),
            };
            assert_eq!(got, want, "{query} as {want}: {}", r.1);
        }
    }
    // A viewer downloads their own export; the outsider cannot fetch it.
    let r = srv.graphql(&viewer, export_project, vars.clone()).await;
    let url = s(&data(&r)["requestExport"]["url"]);
    for (token, status) in [(&viewer, 200), (&auditor, 200), (&outsider, 404)] {
        let got = srv
            .http
            .get(format!("{}{url}", srv.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), status);
    }

    // Authentication is required; introspection works once authenticated.
    let (st, body) = srv
        .call("POST", "/graphql", None, json!({"query": projects}))
        .await;
    assert_eq!((st, s(&body["code"])), (401, "unauthenticated".to_string()));
    let r = srv
        .graphql(
            &outsider,
            "{ __schema { queryType { name } mutationType { name } } }",
            Value::Null,
        )
        .await;
    assert_eq!(data(&r)["__schema"]["queryType"]["name"], "Query");
    let page = srv
        .http
        .get(format!("{}/graphql", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("GraphiQL"));

    // Limits and malformed requests, each with its code.
    let deep = format!(
        "{{ projects {{ models {}name{} }} }}",
        "versions { model { ".repeat(6),
        " } }".repeat(6)
    );
    let r = srv.graphql(&t, &deep, Value::Null).await;
    assert_eq!(code(&r), "depth_limit", "{}", r.1);
    let fields = "position eventId eventType schemaVersion stream streamVersion actor recordedAt hash prevHash signature keyId";
    let wide = format!(
        "{{ a: events(first: 500) {{ edges {{ node {{ {fields} }} }} }} b: events(first: 500) {{ edges {{ node {{ {fields} }} }} }} c: events(first: 500) {{ edges {{ node {{ {fields} }} }} }} d: events(first: 500) {{ edges {{ node {{ {fields} }} }} }} }}"
    );
    assert_eq!(
        code(&srv.graphql(&t, &wide, Value::Null).await),
        "complexity_limit"
    );
    let cases = [
        (
            "{ events(first: 501) { edges { cursor } } }",
            "page_too_large",
        ),
        (
            "{ events(first: -1) { edges { cursor } } }",
            "invalid_argument",
        ),
        (
            "{ events(after: \"x\") { edges { cursor } } }",
            "invalid_cursor",
        ),
        (
            "{ events(filter: {from: \"yesterday\"}) { edges { cursor } } }",
            "invalid_argument",
        ),
        (
            "{ projects(asOf: \"last week\") { id } }",
            "invalid_argument",
        ),
        ("{ projects { nope } }", "invalid_query"),
        ("{ projects { id ", "invalid_query"),
        ("{ project(id: \"x\") { id } }", "invalid_id"),
        (
            "{ ledger { inclusionProof(position: 99999) { root } } }",
            "out_of_range",
        ),
    ];
    for (query, want) in cases {
        assert_eq!(
            code(&srv.graphql(&t, query, Value::Null).await),
            want,
            "{query}"
        );
    }
    let (st, body) = srv.raw("POST", "/graphql", &t, "{not json").await;
    assert_eq!(
        (st, s(&body["code"])),
        (400, "malformed_request".to_string())
    );
}
