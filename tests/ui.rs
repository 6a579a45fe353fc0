//! The web UI in a real browser: Debian's chromium, driven through
//! chromedriver (WebDriver) by fantoccini, against a real berth with images
//! pushed by skopeo. Each test starts its own berth, chromedriver and
//! chromium (headless, a fresh profile, no network beyond loopback).
//!
//! The screenshots in docs/screenshots/ are taken by these tests.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clients::{Docker, Image, ok, run_with_input};
use common::Berth;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

/// chromedriver and the chromium it drives; both go away on drop.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        let port = common::free_port();
        // Its own process group, so that chromium goes with it.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver (Debian's chromium-driver; scripts/install-test-deps.sh)");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..150 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        driver,
                        client: Some(client),
                        _profile: profile,
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromedriver did not start a browser: {last:?}");
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn text(c: &Client, css: &str) -> String {
    // The element found can be replaced before its text is read (a page
    // still loading): find it again then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let element = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reading {css} again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

/// Waits until the element's text is `want` (a page load replacing the
/// one with the same element).
async fn wait_text(c: &Client, css: &str, want: &str) {
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && e.text().await.is_ok_and(|t| t == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed {want:?}");
}

async fn body_text(c: &Client) -> String {
    text(c, "body").await
}

async fn sign_in(c: &Client, b: &Berth, user: &str, password: &str) {
    c.goto(&b.url("/ui/login")).await.unwrap();
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(c, "#account").await, user);
}

/// Saves what the browser shows as docs/screenshots/<name>.png.
async fn screenshot(c: &Client, name: &str) {
    let dir = common::repo_root().join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

// ---------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------

fn secure_berth() -> (Berth, String) {
    let b = Berth::start_secure("");
    let password = b.admin_password();
    (b, password)
}

fn add_user(b: &Berth, name: &str) -> String {
    let password = format!("password-of-{name}");
    b.manage_with_input(
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    password
}

/// A fresh image with `labels` and manifest `annotations`, pushed by
/// skopeo as `repo:tag` with the admin's credentials.
fn push(
    b: &Berth,
    work: &Path,
    password: &str,
    repo: &str,
    tag: &str,
    labels: &[&str],
    annotations: &[&str],
) -> Image {
    let name = format!("{}-{tag}", repo.replace('/', "-"));
    let layout = work.join(&name);
    let mut cmd = Command::new("python3");
    cmd.arg(common::repo_root().join("scripts/make-test-image.py"))
        .arg(&layout)
        .args(["--layers", "2", "--layer-size", "20000", "--tag", tag]);
    for l in labels {
        cmd.args(["--label", l]);
    }
    for a in annotations {
        cmd.args(["--annotation", a]);
    }
    let summary: serde_json::Value = serde_json::from_str(&ok(&mut cmd)).unwrap();
    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("admin:{password}"),
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{}/{repo}:{tag}", b.host),
    ]));
    Image {
        layout,
        tag: tag.to_owned(),
        manifest_digest: summary["manifest_digest"].as_str().unwrap().to_owned(),
        config_digest: summary["config_digest"].as_str().unwrap().to_owned(),
        layers: summary["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect(),
        docker_archive: PathBuf::new(),
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The bytes of `repo:reference` as the distribution API serves them.
async fn raw_manifest(b: &Berth, password: &str, repo: &str, reference: &str) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth("admin", Some(password))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    r.bytes().await.unwrap().to_vec()
}

async fn put(
    b: &Berth,
    password: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let r = reqwest::Client::new()
        .put(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth("admin", Some(password))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
}

async fn upload_blob(b: &Berth, password: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = common::sha256(bytes);
    let r = reqwest::Client::new()
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .basic_auth("admin", Some(password))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    digest
}

/// The status of `repo:reference` through the distribution API.
async fn manifest_status(b: &Berth, password: &str, repo: &str, reference: &str) -> StatusCode {
    reqwest::Client::new()
        .get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth("admin", Some(password))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .status()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_browses_an_image_pulls_it_with_the_shown_command_and_deletes_a_tag() {
    let work = clients::short_tempdir();
    let (b, password) = secure_berth();
    let image = push(
        &b,
        work.path(),
        &password,
        "team/web",
        "v1",
        &["org.opencontainers.image.title=web frontend"],
        &["org.opencontainers.image.source=https://git.example/web"],
    );
    push(&b, work.path(), &password, "team/web", "old", &[], &[]);
    push(&b, work.path(), &password, "tools/ci", "latest", &[], &[]);

    // `/` leads to the UI, and the distribution API is where it was.
    let http = reqwest::Client::new();
    let r = http.get(b.url("/")).send().await.unwrap();
    assert_eq!(r.url().path(), "/ui/", "{r:?}");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));

    let browser = Browser::start().await;
    let c = browser.c();
    sign_in(c, &b, "admin", &password).await;

    // The list: both repositories, with their tag counts.
    c.goto(&b.url("/ui/")).await.unwrap();
    let list = text(c, "#repositories").await;
    assert!(
        list.contains("team/web") && list.contains("tools/ci"),
        "{list}"
    );
    screenshot(c, "repositories").await;
    // Search narrows it.
    c.goto(&b.url("/ui/?q=tools")).await.unwrap();
    let list = text(c, "#repositories").await;
    assert!(
        list.contains("tools/ci") && !list.contains("team/web"),
        "{list}"
    );

    // The repository: its tags with digests.
    c.goto(&b.url("/ui/r/team/web")).await.unwrap();
    assert_eq!(text(c, "#tag-count").await, "2");
    let tags = text(c, "#tags").await;
    assert!(tags.contains("v1") && tags.contains("old"), "{tags}");
    assert!(tags.contains(&image.manifest_digest[..19]), "{tags}");
    assert!(tags.contains("linux/amd64"), "{tags}");
    assert!(tags.contains("admin"), "pushed by: {tags}");
    screenshot(c, "repository").await;

    // The image: platform, layers, labels, annotations.
    c.find(Locator::LinkText("v1"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(c, "#digest").await, image.manifest_digest);
    assert_eq!(text(c, "#platform").await, "linux/amd64");
    assert_eq!(text(c, "#cmd").await, "/bin/true");
    let layers = text(c, "#layers").await;
    for layer in &image.layers {
        assert!(layers.contains(layer), "{layer} not in {layers}");
    }
    let labels = text(c, "#labels").await;
    assert!(labels.contains("web frontend"), "{labels}");
    let annotations = text(c, "#annotations").await;
    assert!(
        annotations.contains("https://git.example/web"),
        "{annotations}"
    );
    assert!(
        text(c, "#history")
            .await
            .contains("make-test-image.py layer 1")
    );
    screenshot(c, "manifest").await;

    // An index: its platforms, each with its own page; and a referrer of
    // v1 with its artifact type.
    let v1 = raw_manifest(&b, &password, "team/web", "v1").await;
    let old = raw_manifest(&b, &password, "team/web", "old").await;
    let descriptor = |bytes: &[u8], platform: serde_json::Value| {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": common::sha256(bytes),
            "size": bytes.len(),
            "platform": platform,
        })
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            descriptor(&v1, json!({"os": "linux", "architecture": "amd64"})),
            descriptor(&old, json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
        ],
    }))
    .unwrap();
    put(
        &b,
        &password,
        "team/web",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    let empty = upload_blob(&b, &password, "team/web", b"{}").await;
    let empty =
        json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2});
    let sbom = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": empty,
        "layers": [empty],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": v1.len()},
    }))
    .unwrap();
    let sbom_digest = common::sha256(&sbom);
    put(&b, &password, "team/web", &sbom_digest, OCI_MANIFEST, &sbom).await;
    c.goto(&b.url("/ui/r/team/web/-/manifests/multi"))
        .await
        .unwrap();
    let platforms = text(c, "#platforms").await;
    assert!(platforms.contains("linux/amd64"), "{platforms}");
    assert!(platforms.contains("linux/arm64/v8"), "{platforms}");
    c.find(Locator::LinkText(&common::sha256(&old)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "#digest", &common::sha256(&old)).await;
    c.goto(&b.url("/ui/r/team/web/-/manifests/v1"))
        .await
        .unwrap();
    let referrers = text(c, "#referrers").await;
    assert!(
        referrers.contains("application/vnd.example.sbom.v1+json"),
        "{referrers}"
    );
    assert!(referrers.contains(&sbom_digest), "{referrers}");

    // The copy button copies the command shown; that command pulls it.
    c.find(Locator::Css("button[data-copy='pull-tag-docker']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let selected = c
        .execute("return window.getSelection().toString();", vec![])
        .await
        .unwrap();
    let command = text(c, "#pull-tag-docker").await;
    assert_eq!(selected.as_str(), Some(command.as_str()));
    assert_eq!(command, format!("docker pull {}/team/web:v1", b.host));
    let docker = Docker::start(&work.path().join("d"));
    let login = run_with_input(
        &mut docker.cmd(&["login", "-u", "admin", "--password-stdin", &b.host]),
        Some(&password),
    );
    assert!(login.success(), "docker login\n{}", login.report());
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "docker");
    ok(&mut docker.cmd(&words[1..]));
    let pulled = docker.inspect(
        &format!("{}/team/web:v1", b.host),
        "{{index .RepoDigests 0}}",
    );
    assert!(pulled.ends_with(&image.manifest_digest), "{pulled}");

    // Delete a tag, confirming; the registry no longer serves it.
    assert_eq!(
        manifest_status(&b, &password, "team/web", "old").await,
        StatusCode::OK
    );
    c.goto(&b.url("/ui/r/team/web")).await.unwrap();
    c.find(Locator::Css("tr[data-tag='old'] button.delete-tag"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = c.get_alert_text().await.unwrap();
    assert!(question.contains("old"), "{question}");
    c.accept_alert().await.unwrap();
    // v1 and the index are left.
    wait_text(c, "#tag-count", "2").await;
    assert!(
        c.find_all(Locator::Css("tr[data-tag='old']"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        manifest_status(&b, &password, "team/web", "old").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest_status(&b, &password, "team/web", "v1").await,
        StatusCode::OK
    );

    // Settings: public read lets anonymous visitors see the repository.
    let anonymous = http.get(b.url("/ui/r/team/web")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    c.find(Locator::Id("public-read"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("save-settings"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text(c, "#tags").await;
    assert_eq!(
        c.find(Locator::Id("public-read"))
            .await
            .unwrap()
            .prop("checked")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    let anonymous = http.get(b.url("/ui/r/team/web")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK);
    let page = anonymous.text().await.unwrap();
    assert!(
        page.contains("sha256:") && !page.contains("Save settings"),
        "{page}"
    );

    // Garbage collection, started from the storage page.
    c.goto(&b.url("/ui/storage")).await.unwrap();
    text(c, "#gc-none").await;
    c.find(Locator::Id("start-gc"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    let mut report = None;
    for _ in 0..100 {
        c.goto(&b.url("/ui/storage")).await.unwrap();
        if let Ok(e) = c.find(Locator::Id("gc-report")).await {
            report = Some(e.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = report.expect("a garbage collection report");
    assert!(report.contains("Blobs examined"), "{report}");

    // The admin pages.
    for (path, name, id) in [
        ("/ui/storage", "storage", "#usage-chart"),
        ("/ui/accounts", "accounts", "#accounts"),
        ("/ui/audit", "audit", "#audit"),
    ] {
        c.goto(&b.url(path)).await.unwrap();
        text(c, id).await;
        screenshot(c, name).await;
    }
    // A robot: its secret shown once with a kubectl command, and it works.
    c.goto(&b.url("/ui/accounts")).await.unwrap();
    c.find(Locator::Id("robot-name"))
        .await
        .unwrap()
        .send_keys("ci")
        .await
        .unwrap();
    c.find(Locator::Id("robot-namespace"))
        .await
        .unwrap()
        .send_keys("team")
        .await
        .unwrap();
    c.find(Locator::Id("create-robot"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let secret = text(c, "#secret-value").await;
    let kubectl = text(c, "#kubectl-secret").await;
    assert_eq!(
        kubectl,
        format!(
            "kubectl create secret docker-registry ci-pull --docker-server={} \
             --docker-username=ci --docker-password={secret}",
            b.host
        )
    );
    let r = http
        .get(b.url("/v2/team/web/tags/list"))
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    c.goto(&b.url("/ui/accounts")).await.unwrap();
    let accounts = text(c, "#accounts").await;
    assert!(accounts.contains("team: pull"), "{accounts}");
    assert!(
        !body_text(c).await.contains(&secret),
        "the secret shows once"
    );
    // Disabled, the robot's secret no longer works.
    c.find(Locator::Css("tr[data-account='ci'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    wait_text(c, "tr[data-account='ci'] td:nth-child(4)", "disabled").await;
    let r = http
        .get(b.url("/v2/team/web/tags/list"))
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{r:?}");

    c.goto(&b.url("/ui/audit?action=manifest.delete"))
        .await
        .unwrap();
    let audit = text(c, "#audit").await;
    assert!(audit.contains("team/web:old"), "{audit}");

    // Signing out ends the session.
    c.goto(&b.url("/ui/")).await.unwrap();
    c.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text(c, "#sign-in").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_sees_only_what_it_may_pull() {
    let work = clients::short_tempdir();
    let (b, password) = secure_berth();
    // Grants first: a running berth trusts what it read for a few seconds.
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team-a", "pull"]);
    b.manage(&["grant", "anonymous", "public", "pull"]);
    push(&b, work.path(), &password, "team-a/app", "v1", &[], &[]);
    push(&b, work.path(), &password, "team-b/app", "v1", &[], &[]);
    push(&b, work.path(), &password, "public/base", "v1", &[], &[]);

    let browser = Browser::start().await;
    let c = browser.c();

    // Anonymous: what anonymous grants allow, and no admin pages.
    c.goto(&b.url("/ui/")).await.unwrap();
    let list = text(c, "#repositories").await;
    assert!(list.contains("public/base"), "{list}");
    assert!(
        !list.contains("team-a") && !list.contains("team-b"),
        "{list}"
    );
    c.goto(&b.url("/ui/storage")).await.unwrap();
    assert!(body_text(c).await.contains("for registry admins"));

    // alice: her namespace (and the public one), nothing else.
    sign_in(c, &b, "alice", &alice).await;
    c.goto(&b.url("/ui/")).await.unwrap();
    let list = text(c, "#repositories").await;
    assert!(
        list.contains("team-a/app") && list.contains("public/base"),
        "{list}"
    );
    assert!(!list.contains("team-b"), "{list}");
    let nav = text(c, "nav").await;
    assert!(
        !nav.contains("Accounts") && !nav.contains("Deploys"),
        "{nav}"
    );

    // A link to another repository: a refusal, none of its data.
    c.goto(&b.url("/ui/r/team-b/app")).await.unwrap();
    let page = body_text(c).await;
    assert!(
        page.contains("alice may not pull from team-b/app"),
        "{page}"
    );
    assert!(!page.contains("sha256:"), "{page}");
    let digest_page = b.url("/ui/r/team-b/app/-/manifests/v1");
    c.goto(&digest_page).await.unwrap();
    assert!(body_text(c).await.contains("may not pull"));
    // A repository that does not exist looks the same.
    c.goto(&b.url("/ui/r/team-c/none")).await.unwrap();
    assert!(
        body_text(c)
            .await
            .contains("alice may not pull from team-c/none")
    );

    // Her own: no delete button, and the server refuses one anyway.
    c.goto(&b.url("/ui/r/team-a/app")).await.unwrap();
    text(c, "#tags").await;
    assert!(
        c.find_all(Locator::Css("button.delete-tag"))
            .await
            .unwrap()
            .is_empty()
    );
    let csrf = c
        .execute(
            "return document.querySelector('form[action=\"/ui/logout\"] input[name=csrf]').value;",
            vec![],
        )
        .await
        .unwrap();
    let csrf = csrf.as_str().unwrap().to_owned();
    c.execute(
        "const f = document.createElement('form'); f.method = 'post'; \
         f.action = '/ui/r/team-a/app/-/tags/v1/delete'; \
         const i = document.createElement('input'); i.name = 'csrf'; i.value = arguments[0]; \
         f.appendChild(i); document.body.appendChild(f); f.submit();",
        vec![json!(csrf)],
    )
    .await
    .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_url(&url::Url::parse(&b.url("/ui/r/team-a/app/-/tags/v1/delete")).unwrap())
        .await
        .unwrap();
    assert!(
        body_text(c)
            .await
            .contains("alice may not delete in team-a/app")
    );
    assert_eq!(
        manifest_status(&b, &password, "team-a/app", "v1").await,
        StatusCode::OK
    );
    screenshot(c, "refused").await;
    browser.close().await;
}

/// Serves `html` to every request on a loopback port: another origin.
async fn serve_page(html: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_text_renders_as_text_and_forms_need_the_token() {
    let work = clients::short_tempdir();
    let (b, password) = secure_berth();
    let script = "<script>window.__xss = 1</script>";
    let img = "\"><img src=x onerror=\"window.__xss = 2\">";
    push(
        &b,
        work.path(),
        &password,
        "evil/app",
        "v1",
        &[&format!("evil.script={script}"), &format!("evil.img={img}")],
        &[&format!("evil.note={img}"), &format!("evil.more={script}")],
    );

    // The headers: no inline script may run, no framing.
    let http = reqwest::Client::new();
    let r = http.get(b.url("/ui/login")).send().await.unwrap();
    let csp = common::header(&r, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The session cookie: HttpOnly, SameSite=Strict.
    let login_cookie = common::header(&r, "set-cookie");
    let token = login_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .post(b.url("/ui/login"))
        .header("cookie", format!("berth_login={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={token}&user=admin&password={}&next=%2Fui%2F",
            form_urlencoded::byte_serialize(password.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|v| v.starts_with("berth_session="))
        .collect();
    assert_eq!(session.len(), 1, "{r:?}");
    assert!(session[0].contains("HttpOnly"), "{}", session[0]);
    assert!(session[0].contains("SameSite=Strict"), "{}", session[0]);
    // Sign-in without the form's token is refused.
    let r = no_redirects
        .post(b.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user=admin&password={password}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let browser = Browser::start().await;
    let c = browser.c();
    sign_in(c, &b, "admin", &password).await;
    c.goto(&b.url("/ui/r/evil/app/-/manifests/v1"))
        .await
        .unwrap();
    let labels = text(c, "#labels").await;
    assert!(labels.contains(script), "{labels}");
    assert!(labels.contains(img), "{labels}");
    let annotations = text(c, "#annotations").await;
    assert!(
        annotations.contains(script) && annotations.contains(img),
        "{annotations}"
    );
    let ran = c
        .execute("return typeof window.__xss;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!("undefined"));
    assert!(
        c.find_all(Locator::Css("main img"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.find_all(Locator::Css("main script"))
            .await
            .unwrap()
            .is_empty()
    );
    screenshot(c, "untrusted-text").await;

    // A page elsewhere posts the delete form without the token: refused,
    // although the browser sends the session cookie along (same site).
    let port = serve_page(format!(
        "<!doctype html><form id=f method=post action=\"{}\">\
         <button id=go type=submit>win a prize</button></form>",
        b.url("/ui/r/evil/app/-/tags/v1/delete")
    ))
    .await;
    c.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    c.find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_url(&url::Url::parse(&b.url("/ui/r/evil/app/-/tags/v1/delete")).unwrap())
        .await
        .unwrap();
    let page = body_text(c).await;
    assert!(page.contains("security token is missing"), "{page}");
    assert_eq!(
        manifest_status(&b, &password, "evil/app", "v1").await,
        StatusCode::OK
    );
    browser.close().await;
}

fn container_image(deployment: &serde_json::Value, container: &str) -> String {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until berth records a deploy of `tag` under `rule` that succeeded.
fn wait_succeeded(b: &Berth, rule: &str, tag: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = b.manage(&["deploys", "--json", "--limit", "100"]);
        let done = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|d| d["rule"] == rule && d["tag"] == tag && d["state"] == "succeeded");
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no successful deploy of {rule}:{tag}: {out}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_timeline_shows_rollouts_and_rolls_back() {
    let cluster = common::kube::Cluster::start();
    let work = clients::short_tempdir();
    let kubeconfig = cluster.shipped_deployer_kubeconfig();
    let b = Berth::start_with_config(&format!(
        r#"
[events]
first_backoff_seconds = 1
max_backoff_seconds = 2

[deploy]
kubeconfig = "{}"

[[deploy.rules]]
name = "app"
repository = "team/app"
timeout_seconds = 60
[[deploy.rules.targets]]
namespace = "apps"
name = "app"
"#,
        kubeconfig.display()
    ));
    let password = b.admin_password();
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: apps }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: app, namespace: apps }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: app }} }}
  template:
    metadata: {{ labels: {{ app: app }} }}
    spec:
      containers:
        - {{ name: app, image: "{}/team/app:1.0.0" }}
"#,
        b.host
    ));
    let first = push(&b, work.path(), &password, "team/app", "1.0.1", &[], &[]);
    wait_succeeded(&b, "app", "1.0.1");
    let second = push(&b, work.path(), &password, "team/app", "1.0.2", &[], &[]);
    wait_succeeded(&b, "app", "1.0.2");
    let pinned = |image: &Image| format!("{}/team/app@{}", b.host, image.manifest_digest);

    let browser = Browser::start().await;
    let c = browser.c();
    sign_in(c, &b, "admin", &password).await;
    c.goto(&b.url("/ui/deploys")).await.unwrap();
    let rule = text(c, "section[data-rule='app']").await;
    assert!(rule.contains("1.0.1") && rule.contains("1.0.2"), "{rule}");
    assert_eq!(
        c.find_all(Locator::Css(
            "section[data-rule='app'] li.deploy[data-state='succeeded']"
        ))
        .await
        .unwrap()
        .len(),
        2
    );
    assert_eq!(text(c, ".runs-now").await, pinned(&second));
    let deliveries = text(c, "#deliveries").await;
    assert!(deliveries.contains("deploy:app"), "{deliveries}");
    screenshot(c, "deploys").await;

    // Roll back: to the image before the last deploy.
    c.find(Locator::Css("section[data-rule='app'] button.rollback"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    cluster.wait_for(
        "app rolled back",
        &["deployment", "app", "-n", "apps"],
        |d| container_image(d, "app") == pinned(&first),
    );
    wait_text(c, ".runs-now", &pinned(&first)).await;
    let states = text(c, "section[data-rule='app'] .timeline").await;
    assert!(states.contains("rolled_back"), "{states}");

    // Roll back onto a chosen earlier digest: the second push's.
    c.find(Locator::Css(&format!(
        "section[data-rule='app'] option[value='{}']",
        second.manifest_digest
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.find(Locator::Css("section[data-rule='app'] button.rollback"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    cluster.wait_for(
        "app on the chosen digest",
        &["deployment", "app", "-n", "apps"],
        |d| container_image(d, "app") == pinned(&second),
    );
    wait_text(c, ".runs-now", &pinned(&second)).await;
    browser.close().await;
}
