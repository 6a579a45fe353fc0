//! `/metrics` as Prometheus sees it: scraped from a real berth before and
//! after pushes and pulls, on the main listener (behind credentials) and on
//! its own listener, with the exposition checked by Prometheus's promtool.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, header};
use serde_json::Value;

use common::push::{OCI_MANIFEST, push_image, push_tagged, put_manifest, random_bytes};
use common::{Berth, sha256};

/// One scrape, parsed: each series (name and labels) and its value.
struct Scrape {
    text: String,
    series: HashMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut series = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = value.parse().expect("a number");
            series.insert((name.to_owned(), labels), value);
        }
        Scrape { text, series }
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.get(&(name.to_owned(), labels)).copied()
    }

    /// The series' value; a series not (yet) there counts as 0, as
    /// Prometheus treats a counter that never moved.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    fn requests(&self, route: &str, method: &str, status: &str) -> f64 {
        self.get(
            "berth_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    }
}

async fn scrape_url(c: &Client, url: &str) -> Scrape {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    assert_eq!(
        common::header(&r, "content-type"),
        "text/plain; version=0.0.4"
    );
    Scrape::parse(r.text().await.unwrap())
}

async fn scrape(c: &Client, b: &Berth) -> Scrape {
    scrape_url(c, &b.url("/metrics")).await
}

/// Scrapes until `done` holds (background work: deliveries, deploys).
async fn scrape_until(c: &Client, url: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape_url(c, url).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never reached:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs Prometheus's own checker on an exposition: it must parse, and
/// pass the linter without a remark.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-test-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && remarks.trim().is_empty(),
        "promtool: {remarks}\n{text}"
    );
}

/// An address on loopback nothing listens on (bound, then let go).
fn free_addr() -> String {
    format!("127.0.0.1:{}", common::free_port())
}

#[tokio::test]
async fn a_push_and_a_pull_move_requests_bytes_uploads_and_storage() {
    let b = Berth::start();
    let c = Client::new();
    let before = scrape(&c, &b).await;
    assert_eq!(before.get("berth_uploads_in_progress", &[]), 0.0);

    // A chunked upload counts as in progress until its closing PUT.
    let r = c
        .post(b.url("/v2/metrics/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    let location = common::header(&r, "location");
    let during = scrape(&c, &b).await;
    assert_eq!(during.get("berth_uploads_in_progress", &[]), 1.0);
    let chunk = random_bytes(1000);
    let r = c
        .put(b.url(&format!("{location}?digest={}", sha256(&chunk))))
        .header("content-type", "application/octet-stream")
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");

    // An image: its config and layer pushed monolithically, then the
    // manifest; then the manifest and the layer pulled, and a tag that
    // is not there asked for.
    let manifest = push_image(&c, &b, "metrics/app", OCI_MANIFEST).await;
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = put_manifest(&c, &b, "metrics/app", "1.0", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let size = |d: &Value| d["size"].as_u64().unwrap();
    let (config_size, layer_size) = (size(&manifest["config"]), size(&manifest["layers"][0]));
    let pulled = c
        .get(b.url("/v2/metrics/app/manifests/1.0"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(pulled, body);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let r = c
        .get(b.url(&format!("/v2/metrics/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len() as u64, layer_size);
    let r = c
        .get(b.url("/v2/metrics/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let not_found_body = r.bytes().await.unwrap().len() as f64;

    let after = scrape(&c, &b).await;
    let moved = |f: &dyn Fn(&Scrape) -> f64| f(&after) - f(&before);

    // Requests, by route (never the repository), method and status.
    assert_eq!(moved(&|s| s.requests("blob_upload", "POST", "202")), 1.0);
    assert_eq!(moved(&|s| s.requests("blob_upload", "POST", "201")), 2.0);
    assert_eq!(
        moved(&|s| s.requests("blob_upload_chunk", "PUT", "201")),
        1.0
    );
    assert_eq!(moved(&|s| s.requests("manifest", "PUT", "201")), 1.0);
    assert_eq!(moved(&|s| s.requests("manifest", "GET", "200")), 1.0);
    assert_eq!(moved(&|s| s.requests("manifest", "GET", "404")), 1.0);
    assert_eq!(moved(&|s| s.requests("blob", "GET", "200")), 1.0);
    // The two scrapes before this one; each is counted once answered.
    assert_eq!(moved(&|s| s.requests("metrics", "GET", "200")), 2.0);
    assert!(
        !after.text.contains("metrics/app"),
        "a repository name in a label:\n{}",
        after.text
    );

    // Body bytes each way, as sent and received by the client.
    let received =
        |route| move |s: &Scrape| s.get("berth_http_received_bytes_total", &[("route", route)]);
    let sent = |route| move |s: &Scrape| s.get("berth_http_sent_bytes_total", &[("route", route)]);
    assert_eq!(
        moved(&received("blob_upload")),
        (config_size + layer_size) as f64
    );
    assert_eq!(moved(&received("blob_upload_chunk")), 1000.0);
    assert_eq!(moved(&received("manifest")), body.len() as f64);
    assert_eq!(moved(&sent("blob")), layer_size as f64);
    assert_eq!(moved(&sent("manifest")), body.len() as f64 + not_found_body);

    // One duration observed per request, in the histogram's buckets.
    let put = [("method", "PUT"), ("route", "manifest")];
    let count = |s: &Scrape| s.get("berth_http_request_duration_seconds_count", &put);
    assert_eq!(moved(&count), 1.0);
    let mut inf = put.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        after.get("berth_http_request_duration_seconds_bucket", &inf),
        after.get("berth_http_request_duration_seconds_count", &put)
    );
    assert!(after.get("berth_http_request_duration_seconds_sum", &put) > 0.0);

    // The upload ended; storage grew by exactly the three blobs.
    assert_eq!(after.get("berth_uploads_in_progress", &[]), 0.0);
    assert_eq!(moved(&|s| s.get("berth_storage_blobs", &[])), 3.0);
    assert_eq!(
        moved(&|s| s.get("berth_storage_blob_bytes", &[])),
        (config_size + layer_size + 1000) as f64
    );

    promtool_check(&after.text);
}

#[tokio::test]
async fn scraping_the_main_listener_needs_pull_on_everything() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let r = c.get(b.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(common::header(&r, "www-authenticate").starts_with("Bearer realm="));

    let alice = b.manage(&["user", "add", "alice"]);
    let alice = alice
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap();
    b.manage(&["grant", "alice", "team", "pull,push"]);
    let r = c
        .get(b.url("/metrics"))
        .basic_auth("alice", Some(alice))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = c
        .get(b.url("/metrics"))
        .basic_auth("admin", Some(b.admin_password()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let s = Scrape::parse(r.text().await.unwrap());
    // The refusals were counted too.
    assert_eq!(s.requests("metrics", "GET", "401"), 1.0);
    assert_eq!(s.requests("metrics", "GET", "403"), 1.0);
}

#[tokio::test]
async fn a_metrics_listen_address_serves_them_there_without_credentials_instead() {
    let metrics_addr = free_addr();
    let b = Berth::start_secure(&format!("[metrics]\nlisten = \"{metrics_addr}\"\n"));
    let admin = {
        let mut headers = header::HeaderMap::new();
        let basic = format!("admin:{}", b.admin_password());
        use base64::Engine;
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(basic)
        );
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        Client::builder().default_headers(headers).build().unwrap()
    };
    let r = admin.get(b.url("/metrics")).send().await.unwrap();
    common::expect_error(r, StatusCode::NOT_FOUND, "UNSUPPORTED").await;

    push_tagged(&admin, &b, "team/app", "1.0").await;
    let anonymous = Client::new();
    let url = format!("http://{metrics_addr}/metrics");
    let s = scrape_url(&anonymous, &url).await;
    assert_eq!(s.requests("manifest", "PUT", "201"), 1.0);
    assert_eq!(s.requests("metrics", "GET", "404"), 1.0);
    assert_eq!(s.get("berth_storage_blobs", &[]), 2.0);
}

#[tokio::test]
async fn deliveries_and_deploys_are_counted_by_result() {
    // A webhook that takes everything, one whose address refuses
    // connections, and a deploy rule whose cluster is unreachable.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(hook, app).await.unwrap() });
    let nowhere = free_addr();
    let data = tempfile::tempdir().unwrap();
    let kubeconfig = data.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"https://{nowhere}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let b = Berth::start_with_config(&format!(
        "[events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\n\
         [[events.webhooks]]\nname = \"ok\"\nurl = \"{hook_url}\"\n\
         [[events.webhooks]]\nname = \"down\"\nurl = \"http://{nowhere}/hook\"\n\
         [deploy]\nkubeconfig = \"{}\"\nregistry_host = \"registry.test:5000\"\n\
         [[deploy.rules]]\nname = \"app\"\nrepository = \"team/app\"\n\
         [[deploy.rules.targets]]\nnamespace = \"prod\"\nname = \"app\"\n",
        kubeconfig.display()
    ));
    let c = Client::new();
    let url = b.url("/metrics");
    let deliveries = |sink: &'static str, result: &'static str| {
        move |s: &Scrape| {
            s.find(
                "berth_event_deliveries_total",
                &[("result", result), ("sink", sink)],
            )
        }
    };

    // Each sink's counters are there, at 0, before anything happened.
    let before = scrape_url(&c, &url).await;
    for sink in ["webhook:ok", "webhook:down", "deploy:app"] {
        for result in ["delivered", "retrying", "gave_up"] {
            assert_eq!(
                deliveries(sink, result)(&before),
                Some(0.0),
                "{sink} {result}\n{}",
                before.text
            );
        }
    }

    push_tagged(&c, &b, "team/app", "1.0").await;
    let after = scrape_until(&c, &url, |s| {
        deliveries("webhook:ok", "delivered")(s) == Some(1.0)
            && deliveries("webhook:down", "retrying")(s) >= Some(1.0)
            && deliveries("deploy:app", "retrying")(s) >= Some(1.0)
            && s.get("berth_deploys_total", &[("result", "failed")]) >= 1.0
    })
    .await;
    assert_eq!(deliveries("webhook:ok", "retrying")(&after), Some(0.0));
    assert_eq!(deliveries("webhook:down", "delivered")(&after), Some(0.0));
    // The failing sinks still hold the event; the working one does not.
    let pending = |sink| after.find("berth_event_deliveries_pending", &[("sink", sink)]);
    assert_eq!(pending("webhook:down"), Some(1.0));
    assert_eq!(pending("deploy:app"), Some(1.0));
    assert_eq!(pending("webhook:ok"), None);
    assert_eq!(after.get("berth_events_pending", &[]), 0.0);
    assert_eq!(
        after.get("berth_deploys_total", &[("result", "succeeded")]),
        0.0
    );

    promtool_check(&after.text);
    server.abort();
}
