//! The admin API over HTTP against a running berth: who may use it, what
//! the repository listing says, and webhooks and deploy rules made, changed
//! and removed at run time, delivering to a real receiver and a real
//! Kubernetes API.

mod common;

use std::time::{Duration, Instant};

use common::kube::Cluster;
use common::push::{
    OCI_MANIFEST, pull_manifest, push_blob, push_image, push_tagged, put_manifest, random_bytes,
};
use common::receiver::Receiver;
use common::{Berth, sha256};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

fn admin(b: &Berth, c: &Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    c.request(method, b.url(&format!("/admin/v1{path}")))
        .basic_auth("admin", Some(b.admin_password()))
}

/// The status of an admin request without a body.
async fn status(b: &Berth, c: &Client, method: reqwest::Method, path: &str) -> StatusCode {
    admin(b, c, method, path).send().await.unwrap().status()
}

async fn get(b: &Berth, c: &Client, path: &str) -> Value {
    let r = admin(b, c, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

/// Polls `check` until it holds, for things that happen in the background.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn only_registry_admins_may_use_it() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let r = c.get(b.url("/admin/v1/repositories")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        common::header(&r, "www-authenticate"),
        r#"Basic realm="berth admin""#
    );
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "UNAUTHORIZED");

    // Admin of one namespace is not admin of the registry.
    b.manage_with_input(
        &["user", "add", "alice", "--password-stdin"],
        "alice-password\n",
    );
    b.manage(&["grant", "alice", "team", "admin"]);
    let r = c
        .get(b.url("/admin/v1/accounts"))
        .basic_auth("alice", Some("alice-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "FORBIDDEN");
    assert!(e["message"].as_str().unwrap().contains("alice"), "{e}");

    // The document is public: it says what exists, not what is in it.
    let doc: Value = c
        .get(b.url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/admin/v1/repositories/{name}/settings"]["put"].is_object());

    // Unknown paths and bad input answer JSON errors, not HTML or 500s.
    assert_eq!(
        status(&b, &c, reqwest::Method::GET, "/nothing/here").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&b, &c, reqwest::Method::GET, "/repositories?limit=0").await,
        StatusCode::BAD_REQUEST
    );
    let r = admin(&b, &c, reqwest::Method::GET, "/repositories/Not%20A%20Name")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "INVALID");
    let r = admin(&b, &c, reqwest::Method::POST, "/accounts")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Bodies are objects. serde would read a struct from an array of its
    // fields: `[]` once set every setting to its default.
    for (method, path, body) in [
        (
            reqwest::Method::PUT,
            "/repositories/team%2Fapp/settings",
            "[]",
        ),
        (reqwest::Method::POST, "/accounts", r#"["bob", "user"]"#),
    ] {
        let r = admin(&b, &c, method, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "INVALID");
        assert!(
            e["message"].as_str().unwrap().contains("a JSON object"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn the_repository_listing_counts_what_each_holds() {
    let b = Berth::start();
    let c = Client::new();
    push_tagged(&c, &b, "team/app", "v1").await;
    push_tagged(&c, &b, "team/app", "v2").await;
    // A blob shared with another repository counts in both totals, in
    // neither's unique size.
    let shared = random_bytes(10_000);
    let shared_digest = push_blob(&c, &b, "team/app", &shared).await;
    let r = c
        .post(b.url(&format!(
            "/v2/team/web/blobs/uploads/?mount={shared_digest}&from=team/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    push_tagged(&c, &b, "other/thing", "1").await;

    let page = get(&b, &c, "/repositories?q=team").await;
    let names: Vec<&str> = page["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team/app", "team/web"]);
    let app = &page["repositories"][0];
    assert_eq!(app["tag_count"], 2);
    assert_eq!(app["manifest_count"], 2);
    let total = app["total_size"].as_i64().unwrap();
    let unique = app["unique_size"].as_i64().unwrap();
    assert_eq!(total - unique, 10_000, "{app}");
    assert!(app["last_push"].is_string());
    assert!(app["last_pull"].is_null());
    let web = &page["repositories"][1];
    assert_eq!(web["total_size"], 10_000);
    assert_eq!(web["unique_size"], 0);

    // Paging: one at a time, following `next`.
    let first = get(&b, &c, "/repositories?limit=1").await;
    assert_eq!(first["repositories"][0]["name"], "other/thing");
    let next = first["next"].as_str().unwrap();
    let second = get(&b, &c, &format!("/repositories?limit=1&after={next}")).await;
    assert_eq!(second["repositories"][0]["name"], "team/app");

    // A pull shows at once (it is written to the store in batches).
    let r = c
        .get(b.url("/v2/team/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let app = get(&b, &c, "/repositories/team%2Fapp").await;
    assert!(app["last_pull"].is_string(), "{app}");

    // Tags with platforms; deleting the repository takes everything.
    let tags = get(&b, &c, "/repositories/team%2Fapp/tags").await;
    assert_eq!(tags[0]["platforms"], json!(["linux/amd64"]));
    // The image's size is its config's and layer's, not the manifest's.
    let manifest = pull_manifest(&c, &b, "team/app", tags[0]["name"].as_str().unwrap()).await;
    let blobs = manifest["config"]["size"].as_i64().unwrap()
        + manifest["layers"][0]["size"].as_i64().unwrap();
    assert_eq!(tags[0]["image_size"], blobs, "{tags}");
    assert_ne!(tags[0]["size"], blobs, "{tags}");
    assert_eq!(
        status(&b, &c, reqwest::Method::DELETE, "/repositories/team%2Fapp").await,
        StatusCode::NO_CONTENT
    );
    let r = c
        .get(b.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Who did it, from where; and each manifest it took, as a delete.
    let audit = get(&b, &c, "/audit").await;
    assert_eq!(audit[0]["action"], "repository.delete", "{audit}");
    assert_eq!(audit[0]["actor"], "admin");
    assert_eq!(audit[0]["address"], "127.0.0.1");
    assert_eq!(audit[1]["action"], "manifest.delete", "{audit}");
}

#[tokio::test]
async fn immutable_tags_refuse_to_move() {
    let b = Berth::start();
    let c = Client::new();
    let first = push_tagged(&c, &b, "team/app", "1.0").await;
    let r = admin(
        &b,
        &c,
        reqwest::Method::PUT,
        "/repositories/team%2Fapp/settings",
    )
    .json(&json!({ "immutable_tags": true }))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let other = push_image(&c, &b, "team/app", OCI_MANIFEST).await;
    let body = serde_json::to_vec(&other).unwrap();
    let r = put_manifest(&c, &b, "team/app", "1.0", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["errors"][0]["code"], "DENIED");
    assert!(
        e["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("immutable")
    );
    // A new tag is fine, and the old one still points where it did.
    let r = put_manifest(&c, &b, "team/app", "1.1", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags = get(&b, &c, "/repositories/team%2Fapp/tags").await;
    let one = tags
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "1.0")
        .unwrap();
    assert_eq!(one["digest"], first.as_str());
    assert_eq!(sha256(&body), tags[0]["digest"].as_str().unwrap());
}

#[tokio::test]
async fn webhooks_made_through_the_api_take_events_at_once() {
    let b = Berth::start_with_config(
        "[[events.webhooks]]\nname = \"from-file\"\nurl = \"http://127.0.0.1:9/\"\nactions = [\"delete\"]\n",
    );
    let c = Client::new();
    let first = Receiver::start(0).await;
    let second = Receiver::start(0).await;
    let (first_url, second_url) = (first.url(), second.url());

    let r = admin(&b, &c, reqwest::Method::POST, "/webhooks")
        .json(&json!({ "name": "ci", "url": first_url, "secret": "s3cret", "repositories": ["team/*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        created["spec"]["secret"], "(set)",
        "secrets are never shown"
    );
    let hooks = get(&b, &c, "/webhooks").await;
    let from_file = hooks
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "from-file")
        .unwrap();
    assert_eq!(from_file["from_config"], true);

    // The config file's webhook is changed there, not here.
    assert_eq!(
        status(&b, &c, reqwest::Method::DELETE, "/webhooks/from-file").await,
        StatusCode::CONFLICT
    );
    // Names are unique; specs are checked.
    let r = admin(&b, &c, reqwest::Method::POST, "/webhooks")
        .json(&json!({ "name": "ci", "url": first_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = admin(&b, &c, reqwest::Method::POST, "/webhooks")
        .json(&json!({ "name": "bad", "url": "not a url" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = admin(&b, &c, reqwest::Method::POST, "/webhooks")
        .json(
            &json!({ "name": "slow", "url": first_url, "timeout_seconds": 9223372036854775808u64 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Test-fire: a ping, answered.
    let r: Value = admin(&b, &c, reqwest::Method::POST, "/webhooks/ci/test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let ping = first.nth_body(1).await;
    assert_eq!(ping["events"][0]["action"], "ping");

    let digest = push_tagged(&c, &b, "team/app", "v1").await;
    let event = first.nth_body(2).await;
    assert_eq!(event["events"][0]["target"]["digest"], digest.as_str());

    // Moved to another receiver: the next push goes there.
    let r = admin(&b, &c, reqwest::Method::PUT, "/webhooks/ci")
        .json(&json!({ "name": "ci", "url": second_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let digest = push_tagged(&c, &b, "team/app", "v2").await;
    let event = second.nth_body(1).await;
    assert_eq!(event["events"][0]["target"]["digest"], digest.as_str());

    // Redelivery sends the same event again.
    // Recorded once the receiver has answered.
    let seq = eventually("both pushes recorded as delivered", async || {
        let d = get(&b, &c, "/deliveries?sink=webhook:ci&state=delivered").await;
        (d.as_array().unwrap().len() == 2).then(|| d[0]["event_seq"].as_i64().unwrap())
    })
    .await;
    let r = admin(
        &b,
        &c,
        reqwest::Method::POST,
        &format!("/deliveries/{seq}/webhook:ci/redeliver"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let again = second.nth_body(2).await;
    assert_eq!(again["events"][0]["target"]["digest"], digest.as_str());

    // Deleted: later pushes are not delivered to it. Another webhook,
    // made after the delete, tells when a later push has been fanned out.
    assert_eq!(
        status(&b, &c, reqwest::Method::DELETE, "/webhooks/ci").await,
        StatusCode::NO_CONTENT
    );
    let events_to_ci = async || {
        let rows = get(&b, &c, "/deliveries?sink=webhook:ci").await;
        let mut seqs: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event_seq"].as_i64().unwrap())
            .collect();
        seqs.sort();
        seqs
    };
    let before = events_to_ci().await;
    let r = admin(&b, &c, reqwest::Method::POST, "/webhooks")
        .json(&json!({ "name": "witness", "url": first_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let digest = push_tagged(&c, &b, "team/app", "v3").await;
    let seen = first.nth_body(3).await;
    assert_eq!(seen["events"][0]["target"]["digest"], digest.as_str());
    assert_eq!(events_to_ci().await, before);
    assert_eq!(second.received().len(), 2);
}

#[tokio::test]
async fn deploy_rules_made_through_the_api_roll_out_pushes() {
    let cluster = Cluster::start();
    let kubeconfig = cluster.shipped_deployer_kubeconfig();
    let b = Berth::start_with_config(&format!(
        "[events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 2\n[deploy]\nkubeconfig = \"{}\"\n",
        kubeconfig.display()
    ));
    let host = b.host.clone();
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: shop }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: api, namespace: shop }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: api }} }}
  template:
    metadata: {{ labels: {{ app: api }} }}
    spec:
      containers:
        - {{ name: api, image: "{host}/shop/api:0" }}
"#
    ));
    let c = Client::new();
    let rule = json!({
        "name": "api",
        "repository": "shop/api",
        "tag": "release-*",
        "targets": [{ "namespace": "shop", "name": "api" }],
    });
    let r = admin(&b, &c, reqwest::Method::POST, "/deploy-rules")
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // Test-fire reads what a push would patch, and changes nothing.
    let test: Value = admin(&b, &c, reqwest::Method::POST, "/deploy-rules/api/test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(test["ok"], true, "{test}");
    let detail = test["detail"].as_str().unwrap();
    assert!(
        detail.contains("Deployment shop/api container api runs"),
        "{detail}"
    );
    assert!(detail.contains(&format!("{host}/shop/api:0")), "{detail}");

    let image = |cluster: &Cluster| {
        cluster.get_json(&["deployment", "api", "-n", "shop"])["spec"]["template"]["spec"]
            ["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let digest = push_tagged(&c, &b, "shop/api", "release-1").await;
    let want = format!("{host}/shop/api@{digest}");
    eventually("the Deployment patched", async || {
        (image(&cluster) == want).then_some(())
    })
    .await;
    let deploys = get(&b, &c, "/deploys?rule=api").await;
    assert_eq!(deploys[0]["new_image"], want.as_str());

    // Changed to another tag pattern: a release-* push no longer rolls.
    let mut changed = rule.clone();
    changed["tag"] = json!("stable");
    let r = admin(&b, &c, reqwest::Method::PUT, "/deploy-rules/api")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    push_tagged(&c, &b, "shop/api", "release-2").await;
    let stable = push_tagged(&c, &b, "shop/api", "stable").await;
    let want = format!("{host}/shop/api@{stable}");
    eventually("the Deployment on stable", async || {
        (image(&cluster) == want).then_some(())
    })
    .await;
    let deploys = get(&b, &c, "/deploys?rule=api").await;
    let tags: Vec<&str> = deploys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["tag"].as_str())
        .collect();
    assert!(!tags.contains(&"release-2"), "{deploys}");

    assert_eq!(
        status(&b, &c, reqwest::Method::DELETE, "/deploy-rules/api").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&b, &c, reqwest::Method::GET, "/deploy-rules/api").await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn garbage_collection_runs_on_request_and_reports() {
    let b = Berth::start_with_config("[gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\n");
    let c = Client::new();
    push_blob(&c, &b, "team/app", &random_bytes(4096)).await;
    let before = get(&b, &c, "/gc").await;
    assert_eq!(before["running"], false);
    assert!(before["last"].is_null());

    assert_eq!(
        status(&b, &c, reqwest::Method::POST, "/gc?dry_run=true").await,
        StatusCode::ACCEPTED
    );
    let report = eventually("the dry run's report", async || {
        let s = get(&b, &c, "/gc").await;
        (!s["last"].is_null()).then(|| s["last"].clone())
    })
    .await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["blobs_deleted"], 1);
    assert_eq!(report["bytes_freed"], 4096);

    assert_eq!(
        status(&b, &c, reqwest::Method::POST, "/gc").await,
        StatusCode::ACCEPTED
    );
    let report = eventually("the run's report", async || {
        let s = get(&b, &c, "/gc").await;
        (s["last"]["dry_run"] == false).then(|| s["last"].clone())
    })
    .await;
    assert_eq!(report["blobs_deleted"], 1);
    let audit = get(&b, &c, "/audit").await;
    assert_eq!(audit[0]["action"], "gc.start");

    // Operators see the runs in the metrics.
    let metrics = c
        .get(b.url("/metrics"))
        .basic_auth("admin", Some(b.admin_password()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"berth_gc_runs_total{mode="dry_run",result="ok"} 1"#,
        r#"berth_gc_runs_total{mode="run",result="ok"} 1"#,
        r#"berth_gc_deleted_total{kind="blobs"} 1"#,
        r#"berth_gc_deleted_total{kind="bytes"} 4096"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
}
