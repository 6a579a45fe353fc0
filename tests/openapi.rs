//! The admin API against its own OpenAPI document: the document is served
//! without credentials and describes what berth does, and schemathesis
//! (installed by scripts/install-test-deps.sh) fuzzes every operation of a
//! running berth that holds real repositories, checking that no answer is a
//! server error and every answer matches the document: status codes,
//! content types, headers and bodies.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Berth;
use common::push::push_tagged;
use serde_json::Value;

/// Config for the fuzzed instance. Credentials are required, as by default;
/// the fuzzer sends wrong and missing passwords on purpose many times a
/// second, so the failed-login throttle is raised out of its way (it would
/// answer 429 where the auth check under test answers 401).
const CONFIG: &str = "[auth]\nmax_failed_logins = 1000000\n";

/// Operations left out of the fuzzing because each could lock the run out
/// of its own registry: it authenticates as `admin`, and these can disable
/// or delete that account (`change_account`, `delete_account`), give it a
/// new password (`rotate_secret`), or replace or revoke its grant on `*`
/// that makes it an admin (`put_grant`, `delete_grant`). Every call after
/// that would be a 401 or 403, hiding whatever the rest would find. The CLI
/// test covers these operations on accounts of its own.
const EXCLUDED: [&str; 5] = [
    "change_account",
    "delete_account",
    "rotate_secret",
    "put_grant",
    "delete_grant",
];

/// Where install-test-deps.sh installs schemathesis; `BERTH_SCHEMATHESIS`
/// points elsewhere.
fn schemathesis() -> PathBuf {
    std::env::var_os("BERTH_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/berth-schemathesis/bin/schemathesis"))
}

/// A client that sends admin's credentials with every request.
fn admin_client(b: &Berth) -> reqwest::Client {
    use base64::Engine;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", b.admin_password()));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn document(b: &Berth) -> Value {
    // No credentials: tools fetch the document before they know any.
    let r = reqwest::get(b.url("/admin/v1/openapi.json")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{r:?}");
    assert_eq!(common::header(&r, "content-type"), "application/json");
    r.json().await.unwrap()
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_describes_the_admin_api() {
    let b = Berth::start_secure(CONFIG);
    let doc = document(&b).await;

    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for main in [
        "/admin/v1/repositories",
        "/admin/v1/repositories/{name}",
        "/admin/v1/repositories/{name}/settings",
        "/admin/v1/repositories/{name}/tags",
        "/admin/v1/repositories/{name}/manifests",
        "/admin/v1/accounts",
        "/admin/v1/accounts/{name}/grants",
        "/admin/v1/webhooks",
        "/admin/v1/deploy-rules",
        "/admin/v1/deliveries",
        "/admin/v1/audit",
    ] {
        assert!(paths.contains_key(main), "{main} is not in the document");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["basic"]["scheme"],
        "basic"
    );

    // Retention counts beyond these are refused; the schema says so.
    let retention = &doc["components"]["schemas"]["RetentionPolicy"]["properties"];
    assert_eq!(retention["keep_last"]["maximum"], 1_000_000);
    assert_eq!(retention["keep_days"]["maximum"], 36_500);

    for (method, path, op) in operations(&doc) {
        // Every operation checks the caller first, so each can answer
        // these; a client generated from the document must expect them.
        for status in ["401", "403", "429"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ApiError",
                "{method} {path} does not document {status}"
            );
        }
        // Page sizes are refused outside 1..=1000: the document says so.
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["name"] == "limit" {
                assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                assert_eq!(p["schema"]["maximum"], 1000, "{method} {path}");
            }
        }
    }
    let ids: Vec<String> = operations(&doc)
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_owned))
        .collect();
    for id in EXCLUDED {
        assert!(ids.iter().any(|i| i == id), "no operation {id}");
    }
}

#[tokio::test]
async fn query_parameters_outside_the_document_are_refused() {
    let b = Berth::start_secure(CONFIG);
    let c = admin_client(&b);
    for query in ["limit=0", "limit=1001", "limt=5", "stat=gave_up"] {
        let r = c
            .get(b.url(&format!("/admin/v1/deliveries?{query}")))
            .send()
            .await
            .unwrap();
        // A misspelt filter used to be ignored, listing everything.
        assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "INVALID", "{query}: {body}");
    }
    let r = c
        .get(b.url("/admin/v1/deliveries?limit=1000&state=gave_up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn schemathesis_finds_nothing() {
    let b = Berth::start_secure(CONFIG);
    let c = admin_client(&b);
    // Something for the repository, tag and manifest operations to find.
    push_tagged(&c, &b, "team/app", "v1").await;
    push_tagged(&c, &b, "team/app", "v2").await;
    push_tagged(&c, &b, "tools/cli", "latest").await;
    let total = operations(&document(&b).await).len();

    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(schemathesis());
    command
        .arg("--config-file")
        .arg(common::repo_root().join("tests/openapi_schemathesis.toml"))
        .arg("run")
        .arg(b.url("/admin/v1/openapi.json"))
        .args(["--auth", &format!("admin:{}", b.admin_password())])
        // What a client relies on: no 5xx, only documented status codes,
        // content types, headers and bodies as documented; requests the
        // document calls invalid refused; no operation open without
        // credentials. Not `positive_data_acceptance`: the document does
        // not spell out every name rule (repository names, tags, digests,
        // account names), so a schema-valid but malformed name gets a
        // correct 400.
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,\
             negative_data_rejection,ignored_auth",
        ])
        // Bounded so the run takes a minute or two on a small machine.
        .args(["--max-examples", "80", "--request-timeout", "20"])
        .args(["--generation-database", "none", "--no-color"])
        // Path parameters are free-form strings, many of which cannot be
        // one URL path segment; hypothesis filtering those out is expected,
        // not a sign of a bad document.
        .args(["--suppress-health-check", "filter_too_much"])
        .env(
            "SCHEMATHESIS_HOOKS",
            common::repo_root().join("tests/openapi_hooks.py"),
        )
        .current_dir(work.path());
    for id in EXCLUDED {
        command.args(["--exclude-operation-id", id]);
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); run scripts/install-test-deps.sh",
            schemathesis().display()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis found failures (its report is above)"
    );
    // Every operation not excluded was tested: none was skipped because
    // the document could not be understood.
    let tested = format!("Tested: {}", total - EXCLUDED.len());
    assert!(stdout.contains(&tested), "expected {tested:?}");
}
