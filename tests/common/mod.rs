//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use provenant::log::{self, ExpectedVersion, Ledger, NewEvent};
use serde_json::{Value, json};

pub fn event(kind: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_type: kind.into(),
        schema_version: 1,
        actor: "user:test".into(),
        payload,
    }
}

pub fn fresh(dir: &Path) -> Ledger {
    Ledger::init(dir).unwrap();
    Ledger::open(dir, log::Config::default()).unwrap()
}

/// Appends `n` events to each of `streams` streams, round-robin.
pub async fn fill(ledger: &Ledger, streams: usize, n: usize) {
    for i in 0..n {
        for s in 0..streams {
            ledger
                .append(
                    &format!("s-{s}"),
                    ExpectedVersion::Any,
                    vec![event("Filled", json!({"i": i, "s": s}))],
                )
                .await
                .unwrap();
        }
    }
}

/// A real server on a loopback port over a fresh data dir, with its first admin.
pub struct Server {
    pub base: String,
    pub admin_token: String,
    pub ledger: Ledger,
    pub state: provenant::api::AppState,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Largest artifact the test servers accept.
pub const TEST_MAX_ARTIFACT: u64 = 200 << 10;

impl Server {
    pub async fn start() -> Server {
        Server::start_with(TEST_MAX_ARTIFACT).await
    }

    /// A server whose uploads (artifacts, job files) may be up to `max_upload` bytes.
    pub async fn start_with(max_upload: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ledger = fresh(dir.path());
        let onnx = provenant::runtime::onnx::load(None).unwrap();
        let blobs = provenant::blobs::BlobStore::new(&dir.path().join("blobs"), max_upload);
        let state = provenant::api::AppState::start(ledger.clone(), blobs, onnx)
            .await
            .unwrap();
        let admin_token =
            provenant::api::command::bootstrap_admin(&ledger, &state.registry, "root")
                .await
                .unwrap();
        let (catalog, hash) = provenant::runtime::bootstrap::load(None).unwrap();
        provenant::api::command::apply_bootstrap(&state, &catalog, &hash)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(provenant::api::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Server {
            base,
            admin_token,
            ledger,
            state,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    /// A new project named `name`, created with `token`; answers its id.
    pub async fn project(&self, token: &str, name: &str) -> String {
        let (st, p) = self
            .call(
                "POST",
                "/api/v1/projects",
                Some(token),
                json!({"name": name}),
            )
            .await;
        assert_eq!(st, 201, "{p}");
        s(&p["data"]["project_id"])
    }

    /// Sends a JSON request (no body when `body` is null); answers the status and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends raw bytes as a JSON-typed body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &'static str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Imports an experiment: the `experiment` JSON part, then `(file name, bytes)` parts.
    pub async fn import(
        &self,
        token: &str,
        project: &str,
        spec: Value,
        files: Vec<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new().text("experiment", spec.to_string());
        for (name, bytes) in files {
            form = form.part(
                "artifact",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
            );
        }
        let r = self
            .http
            .post(format!(
                "{}/api/v1/projects/{project}/experiments",
                self.base
            ))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends a file as the body, typed `content_type` if given; answers status and JSON body.
    pub async fn send_file(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        file: Vec<u8>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .body(file);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub fn size(&self) -> u64 {
        self.ledger.head().size
    }

    /// Posts a GraphQL request to `/graphql`; answers the status and the JSON response.
    pub async fn graphql(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        self.call(
            "POST",
            "/graphql",
            Some(token),
            json!({"query": query, "variables": variables}),
        )
        .await
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new("fixtures/models").join(name)).unwrap()
}

/// A JSON string's text; panics (failing the test) on anything else.
pub fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Imports `file` as an experiment with `target`, registers it, answers (model id, experiment id).
pub async fn register(
    srv: &Server,
    project: &str,
    file: &str,
    kind: &str,
    target: Option<&str>,
) -> (String, String) {
    let t = &srv.admin_token;
    let mut spec = json!({"display_name": file, "artifacts": [{"file": file, "type": kind}]});
    if let Some(target) = target {
        spec["parameters"] = json!({"target_column": target});
    }
    let bytes = if kind == "onnx" {
        fixture(file)
    } else {
        b"not a real pipeline".to_vec()
    };
    let (st, x) = srv.import(t, project, spec, vec![(file, bytes)]).await;
    assert_eq!(st, 201, "{x}");
    let xid = s(&x["data"]["experiment_id"]);
    let (_, m) = srv
        .call(
            "POST",
            &format!("/api/v1/projects/{project}/models"),
            Some(t),
            json!({"name": file}),
        )
        .await;
    let mid = s(&m["data"]["model_id"]);
    let (st, v) = srv
        .call(
            "POST",
            &format!("/api/v1/models/{mid}/versions"),
            Some(t),
            json!({"experiment_id": xid}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    (mid, xid)
}

/// Scores as the admin (deployments accept project members' tokens by default).
pub async fn score(srv: &Server, d: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    score_as(srv, d, Some(&srv.admin_token), body).await
}

pub async fn score_as(
    srv: &Server,
    d: &str,
    bearer: Option<&str>,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = srv
        .http
        .post(format!("{}/{d}/model/score", srv.base))
        .json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// A user with `roles` and an API token: (user id, token).
pub async fn create_user(srv: &Server, name: &str, roles: Value) -> (String, String) {
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

/// A new project with the wine classifier registered (target `cultivar`) and deployed to
/// DEV with default settings: (project id, model id, deployment body).
pub async fn deployed_wine(srv: &Server, project: &str) -> (String, String, Value) {
    let t = &srv.admin_token;
    let pid = srv.project(t, project).await;
    let (mid, _) = register(srv, &pid, "wine_classifier.onnx", "onnx", Some("cultivar")).await;
    let body = json!({"model_id": mid, "version": 1, "environment": "DEV"});
    let (st, d) = srv.call("POST", "/api/v1/deployments", Some(t), body).await;
    assert_eq!(st, 201, "{d}");
    (pid, mid, d)
}

/// Distinct wine rows, as text cells, each column scaled by `scale[j]`.
pub fn wine(from: usize, to: usize, scale: &[f64]) -> (Vec<String>, Vec<Vec<String>>) {
    let (fields, rows) = provenant::bench::wine_rows(to).unwrap();
    let rows = rows[from..]
        .iter()
        .map(|r| {
            r.iter()
                .zip(scale.iter().chain(std::iter::repeat(&1.0)))
                .map(|(v, k)| (v * k).to_string())
                .collect()
        })
        .collect();
    (fields, rows)
}

pub fn csv(fields: &[String], rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = fields.join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

pub async fn put_reference(
    srv: &Server,
    token: &str,
    model: &str,
    query: &str,
    content_type: Option<&str>,
    file: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/api/v1/models/{model}/versions/1/reference{query}");
    srv.send_file("PUT", &path, token, content_type, file).await
}

pub async fn drift(srv: &Server, dep: &str, query: &str) -> (u16, Value) {
    srv.call(
        "GET",
        &format!("/api/v1/deployments/{dep}/drift{query}"),
        Some(&srv.admin_token),
        Value::Null,
    )
    .await
}

pub async fn score_rows(srv: &Server, dep: &str, fields: &[String], rows: &[Vec<String>]) {
    for chunk in rows.chunks(100) {
        let (st, _, b) = score(srv, dep, json!({"fields": fields, "rows": chunk})).await;
        assert_eq!(st, 200, "{b}");
    }
}

/// Rows 600..1200 of `wine`, each value moved by at most ±0.5%: a sample of its own from the
/// distribution of rows 0..600.
pub fn calm_wine() -> Vec<Vec<String>> {
    let (_, same) = wine(600, 1200, &[]);
    same.iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .enumerate()
                .map(|(j, v)| {
                    let jitter = 1.0 + ((i * 17 + j * 5) % 11) as f64 * 1e-3 - 5e-3;
                    (v.parse::<f64>().unwrap() * jitter).to_string()
                })
                .collect()
        })
        .collect()
}

/// Another deployment of `model`'s version 1 to DEV with `retention` (null: the default);
/// answers its id.
pub async fn deploy_again(srv: &Server, model: &str, retention: Value) -> String {
    let mut body = json!({"model_id": model, "version": 1, "environment": "DEV"});
    if !retention.is_null() {
        body["retention"] = retention;
    }
    let (st, d) = srv
        .call("POST", "/api/v1/deployments", Some(&srv.admin_token), body)
        .await;
    assert_eq!(st, 201, "{d}");
    s(&d["data"]["deployment_id"])
}

/// A new user with `role` in the project: (user id, token).
pub async fn member(srv: &Server, project: &str, name: &str, role: &str) -> (String, String) {
    let (user, token) = create_user(srv, name, json!([])).await;
    let (st, m) = srv
        .call(
            "PUT",
            &format!("/api/v1/projects/{project}/members/{user}"),
            Some(&srv.admin_token),
            json!({ "role": role }),
        )
        .await;
    assert_eq!(st, 200, "{m}");
    (user, token)
}
