//! Three berth replicas behind one (imagined) load balancer: one PostgreSQL
//! database and one blob store shared, each replica on its own port. What
//! a user sees when consecutive requests land on different replicas: a push
//! through one is pulled through another, an upload is continued elsewhere,
//! concurrent pushes of the same blob and tag, a replica killed mid-upload,
//! events delivered once however many replicas there are, and garbage
//! collection while other replicas take pushes.
//!
//! The tests need a PostgreSQL server: the suite's (`BERTH_TEST_POSTGRES`)
//! on its PostgreSQL pass, otherwise a throwaway one started here with
//! scripts/test-postgres.sh and stopped when the last test using it ends.
//! Each test gets its own database, blob store and ports.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clients::{Containerd, Image, OCI_MANIFEST, Served, layout_blob, ok, read, short_tempdir};
use common::push::random_bytes;
use common::receiver::Receiver;
use common::{header, sha256};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The shared PostgreSQL server
// ---------------------------------------------------------------------------

/// The PostgreSQL server the replicas' databases are made on. One started
/// here is stopped when the last test holding it drops it.
struct Postgres {
    url: String,
    /// The cluster's directory, when this process started it.
    started: Option<PathBuf>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let _ = Command::new("bash")
                .arg(common::repo_root().join("scripts/test-postgres.sh"))
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}

static POSTGRES: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

fn postgres() -> Arc<Postgres> {
    let mut slot = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(match common::postgres_url() {
        Some(url) => Postgres { url, started: None },
        None => {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = PathBuf::from(format!(
                "/tmp/berth-replicas-pg.{}.{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let out = Command::new("bash")
                .arg(common::repo_root().join("scripts/test-postgres.sh"))
                .arg("start")
                .arg(&dir)
                .stderr(Stdio::piped())
                .output()
                .expect("run scripts/test-postgres.sh");
            assert!(
                out.status.success(),
                "scripts/test-postgres.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            Postgres {
                url,
                started: Some(dir),
            }
        }
    });
    *slot = Arc::downgrade(&server);
    server
}

// ---------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------

/// The blob store the replicas share: one bucket on a real S3-compatible
/// server (moto).
struct SharedStorage {
    bucket: common::s3::S3Bucket,
    _server: common::s3::MotoServer,
}

impl SharedStorage {
    async fn new() -> SharedStorage {
        let server = common::s3::MotoServer::start();
        SharedStorage {
            bucket: server.bucket().await,
            _server: server,
        }
    }

    /// The top of a replica's config: its data directory and where its
    /// blobs go. `own` is a directory of the replica's alone.
    fn config(&self, own: &Path) -> String {
        format!("data_dir = {own:?}\n{}", self.bucket.config(""))
    }
}

/// One `berth serve` process.
struct Replica {
    name: &'static str,
    child: Child,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Its config file and log.
    dir: tempfile::TempDir,
}

impl Replica {
    /// Starts berth with the config file in `dir` and waits until it listens.
    fn start(name: &'static str, dir: tempfile::TempDir) -> Replica {
        let log = fs::File::create(dir.path().join("berth.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path().join("config.toml"))
            .env("RUST_LOG", "berth=debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start berth");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let host = line
            .split_whitespace()
            .find_map(|word| word.split_once("://"))
            .map(|(_, host)| host.to_owned())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "replica {name} did not start: {line:?}\n{}",
                    fs::read_to_string(dir.path().join("berth.log")).unwrap_or_default()
                )
            });
        Replica {
            name,
            child,
            host,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.host, path)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash, an OOM kill or a lost node would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the replicas share, made before any of them starts: a database, a
/// bucket, and a directory for the files (signing key, admin password).
struct Shared {
    database: String,
    storage: SharedStorage,
    files: tempfile::TempDir,
    // Last: the server outlives the database's users.
    _postgres: Arc<Postgres>,
}

impl Shared {
    async fn new() -> Shared {
        let postgres = postgres();
        Shared {
            database: common::create_database(&postgres.url),
            storage: SharedStorage::new().await,
            files: tempfile::tempdir().expect("temp dir"),
            _postgres: postgres,
        }
    }
}

/// Three replicas (`a`, `b`, `c`) sharing a database, a blob store, the
/// token signing key and the initial admin password.
struct Cluster {
    // First: the replicas stop before what they share goes.
    replicas: Vec<Replica>,
    password: String,
    shared: Shared,
}

impl Cluster {
    /// Anonymous callers on loopback may do everything; `extra` is more of
    /// the config (tables), the same for every replica.
    async fn start(extra: &str) -> Cluster {
        Cluster::start_with(true, |_| extra.to_owned()).await
    }

    /// Credentials needed.
    async fn start_secure(extra: &str) -> Cluster {
        Cluster::start_with(false, |_| extra.to_owned()).await
    }

    /// `extra(name)` is more of the config of the replica `name`.
    async fn start_with(anonymous: bool, extra: impl Fn(&str) -> String) -> Cluster {
        let shared = Shared::new().await;
        let password = format!("pw-{}", &sha256(&random_bytes(16))[7..23]);
        let password_file = shared.files.path().join("admin-password");
        fs::write(&password_file, format!("{password}\n")).unwrap();
        let signing_key = shared.files.path().join("token-signing-key.pem");
        Cluster::launch(shared, password, |name, dir, shared| {
            format!(
                "{storage}\n\
                 [auth]\nanonymous_loopback = {anonymous}\n\
                 signing_key = {signing_key:?}\n\
                 initial_admin_password_file = {password_file:?}\n\n\
                 [database]\nurl = {database:?}\n\n{extra}\n",
                storage = shared.storage.config(dir),
                database = shared.database,
                extra = extra(name),
            )
        })
    }

    /// Starts `a`, `b` and `c` in turn, each in a directory of its own
    /// with the config `config(name, dir, shared)`. The first start runs
    /// the migrations and creates the admin (and the signing key): the
    /// others start once it is ready.
    fn launch(
        shared: Shared,
        password: String,
        config: impl Fn(&str, &Path, &Shared) -> String,
    ) -> Cluster {
        let mut replicas = Vec::new();
        for name in ["a", "b", "c"] {
            let dir = tempfile::tempdir().expect("temp dir");
            let text = config(name, dir.path(), &shared);
            common::write_config(&dir.path().join("config.toml"), &text);
            replicas.push(Replica::start(name, dir));
        }
        Cluster {
            replicas,
            password,
            shared,
        }
    }

    /// Three replicas on the README's replica config, its names pointed at
    /// this test's database, bucket and files; the key and the password
    /// made by the README's commands.
    async fn start_from_readme() -> Cluster {
        let readme = fs::read_to_string(common::repo_root().join("README.md")).unwrap();
        let section = readme
            .split("## Running several replicas")
            .nth(1)
            .expect("README has a section on replicas");
        let block = |fence: &str| -> String {
            section
                .split(fence)
                .nth(1)
                .and_then(|rest| rest.split("```").next())
                .unwrap_or_else(|| panic!("the section has a {fence} block"))
                .to_owned()
        };
        let (example, commands) = (block("```toml\n"), block("```sh\n"));
        let shared = Shared::new().await;
        let made = Command::new("bash")
            .args(["-euc", &commands])
            .current_dir(shared.files.path())
            .output()
            .expect("run the README's commands");
        assert!(made.status.success(), "{made:?}");
        let password = fs::read_to_string(shared.files.path().join("admin-password"))
            .unwrap()
            .trim()
            .to_owned();
        Cluster::launch(shared, password, |_, dir, shared| {
            let mut config = example.clone();
            let own = format!("{dir:?}");
            let files = format!("\"{}/", shared.files.path().display());
            for (from, to) in [
                ("\"/var/lib/berth\"", own.as_str()),
                (
                    "postgres://berth:secret@db.internal:5432/berth",
                    shared.database.as_str(),
                ),
                (
                    "http://minio.internal:9000",
                    shared.storage.bucket.endpoint.as_str(),
                ),
                (
                    "bucket = \"berth\"",
                    &format!("bucket = {:?}", shared.storage.bucket.name),
                ),
                ("access_key_id = \"berth\"", "access_key_id = \"test\""),
                (
                    "secret_access_key = \"secret\"",
                    "secret_access_key = \"test\"",
                ),
                ("\"/etc/berth/", files.as_str()),
            ] {
                assert!(config.contains(from), "the README's config has no {from}");
                config = config.replace(from, to);
            }
            config
        })
    }

    fn a(&self) -> &Replica {
        &self.replicas[0]
    }
    fn b(&self) -> &Replica {
        &self.replicas[1]
    }
    fn c(&self) -> &Replica {
        &self.replicas[2]
    }

    /// Runs a `berth` management command with replica `a`'s config; its
    /// output, or what it printed on failing.
    fn try_manage(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--config")
            .arg(self.a().config_path())
            .stdin(Stdio::null())
            .output()
            .expect("run berth");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8(out.stdout).expect("utf-8 output"))
    }

    /// `berth gc --json`, or `None` when a replica is collecting (one
    /// collector at a time across all of them).
    fn gc(&self) -> Option<Value> {
        match self.try_manage(&["gc", "--json"]) {
            Ok(report) => Some(serde_json::from_str(&report).expect("a JSON report")),
            Err(e) if e.contains("running in another berth process") => None,
            Err(e) => panic!("berth gc failed: {e}"),
        }
    }

    /// Collects once, waiting for a collection in progress to end.
    fn gc_once(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(report) = self.gc() {
                return report;
            }
            assert!(Instant::now() < deadline, "garbage collection never free");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows what each replica logged last.
        if std::thread::panicking() {
            for r in &self.replicas {
                let log = r.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!(
                    "--- replica {} ({}) log, last lines ---\n{tail}",
                    r.name, r.host
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Sends a request; a 5xx fails the test at once.
async fn send(request: RequestBuilder) -> Response {
    let r = request.send().await.expect("request");
    assert!(!r.status().is_server_error(), "{r:?}");
    r
}

/// Fails the test, naming the replica, unless `res` has `status`.
fn expect_status(res: &reqwest::Response, status: StatusCode, r: &Replica) {
    assert_eq!(res.status(), status, "replica {}: {res:?}", r.name);
}

/// Pushes a blob monolithically through `r`; returns its digest.
async fn push_blob(c: &Client, r: &Replica, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let res = send(
        c.post(r.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec()),
    )
    .await;
    expect_status(&res, StatusCode::CREATED, r);
    digest
}

/// An OCI manifest naming a fresh config and `layers` (digest, size).
fn manifest(config: &str, layers: &[(String, usize)]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": layers.iter().map(|(digest, size)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size,
        })).collect::<Vec<_>>(),
    })
}

fn fresh_config() -> String {
    format!(
        r#"{{"architecture":"amd64","os":"linux","n":"{}"}}"#,
        sha256(&random_bytes(8))
    )
}

async fn put_manifest(
    c: &Client,
    r: &Replica,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> Response {
    send(
        c.put(r.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec()),
    )
    .await
}

/// Pushes a fresh image (config and one layer) as `repo:tag` through `r`;
/// returns the manifest's digest and the manifest.
async fn push_tagged(c: &Client, r: &Replica, repo: &str, tag: &str) -> (String, Value) {
    let config = fresh_config();
    let layer = random_bytes(3000);
    push_blob(c, r, repo, config.as_bytes()).await;
    let layer_digest = push_blob(c, r, repo, &layer).await;
    let m = manifest(&config, &[(layer_digest, layer.len())]);
    let body = serde_json::to_vec(&m).unwrap();
    let res = put_manifest(c, r, repo, tag, &body).await;
    expect_status(&res, StatusCode::CREATED, r);
    (sha256(&body), m)
}

/// Pulls `repo@reference` through `r` in full: the manifest (whose digest
/// is returned) and every blob it names, each checked against its digest.
async fn pull_in_full(c: &Client, r: &Replica, repo: &str, reference: &str) -> String {
    let res = send(
        c.get(r.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "replica {}: {repo}:{reference}: {res:?}",
        r.name
    );
    let body = res.bytes().await.unwrap();
    let m: Value = serde_json::from_slice(&body).unwrap();
    let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap());
    for descriptor in blobs {
        let digest = descriptor["digest"].as_str().unwrap();
        let res = send(c.get(r.url(&format!("/v2/{repo}/blobs/{digest}")))).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "replica {}: {repo}:{reference}: blob {digest}: {res:?}",
            r.name
        );
        let bytes = res.bytes().await.unwrap();
        assert_eq!(
            sha256(&bytes),
            digest,
            "replica {}: {repo}:{reference}: blob {digest} damaged",
            r.name
        );
        assert_eq!(bytes.len() as u64, descriptor["size"].as_u64().unwrap());
    }
    sha256(&body)
}

/// Waits up to `limit` for `check` to answer `Ok`; returns its last answer.
/// Replicas cache what they read from the shared metadata for a moment,
/// so a change made through one is seen by the others shortly after.
async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let got = check().await;
        if got.is_ok() || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long replicas may disagree about a tag or a listing after a change.
const CONVERGENCE: Duration = Duration::from_secs(2);

async fn json_of(request: RequestBuilder) -> Value {
    let res = send(request).await;
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    res.json().await.unwrap()
}

/// The path of an upload's `Location`, which may be absolute.
fn location_path(res: &Response) -> String {
    let location = header(res, "location");
    match location.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_owned(),
        None => location,
    }
}

/// Opens an upload in `repo` through `r`; returns its path.
async fn start_upload(c: &Client, r: &Replica, repo: &str) -> String {
    let res = send(c.post(r.url(&format!("/v2/{repo}/blobs/uploads/")))).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");
    assert_eq!(header(&res, "range"), "0-0");
    location_path(&res)
}

/// PATCHes `chunk` at `start` into the upload at `path` through `r`.
async fn patch_chunk(c: &Client, r: &Replica, path: &str, start: usize, chunk: &[u8]) -> Response {
    send(
        c.patch(r.url(path))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec()),
    )
    .await
}

/// The Range an upload's status shows through `r`.
async fn upload_range(c: &Client, r: &Replica, path: &str) -> String {
    let res = send(c.get(r.url(path))).await;
    expect_status(&res, StatusCode::NO_CONTENT, r);
    header(&res, "range")
}

/// `PUT <upload>?digest=` through `r`, ending the upload.
async fn finish_upload(c: &Client, r: &Replica, path: &str, digest: &str) -> Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    send(c.put(r.url(&format!("{path}{sep}digest={digest}")))).await
}

async fn blob_bytes(c: &Client, r: &Replica, repo: &str, digest: &str) -> Vec<u8> {
    let res = send(c.get(r.url(&format!("/v2/{repo}/blobs/{digest}")))).await;
    expect_status(&res, StatusCode::OK, r);
    res.bytes().await.unwrap().to_vec()
}

// ---------------------------------------------------------------------------
// 1. Push through one, pull through another
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_one_replica_is_pulled_through_the_others() {
    let cluster = Cluster::start_secure("").await;
    let (a, b, c) = (cluster.a(), cluster.b(), cluster.c());
    let creds = format!("admin:{}", cluster.password);
    let work = short_tempdir();
    let image = Image::generate(work.path(), "img", "v1", 3, 500_000);
    let repo = "team/app";

    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &image.oci_ref(),
        &format!("docker://{}/{repo}:v1", a.host),
    ]));

    // skopeo through b, byte for byte.
    let back = work.path().join("back");
    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{}/{repo}:v1", b.host),
        &format!("oci:{}:v1", back.display()),
    ]));
    let index: Value = serde_json::from_slice(&read(&back.join("index.json"))).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"], image.manifest_digest,
        "pulled through b: {index}"
    );
    for digest in image.blobs() {
        let copy = read(&layout_blob(&back, digest));
        assert_eq!(sha256(&copy), digest, "blob {digest} pulled through b");
        assert!(copy == read(&layout_blob(&image.layout, digest)));
    }

    // containerd through c: the digest b served, every blob, unpacked.
    let http = Client::new();
    let res = send(
        http.get(c.url(&format!("/v2/{repo}/manifests/v1")))
            .basic_auth("admin", Some(&cluster.password))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{res:?}");
    let served = Served {
        digest: header(&res, "docker-content-digest"),
        content_type: header(&res, "content-type"),
        body: res.bytes().await.unwrap().to_vec(),
    };
    assert_eq!(served.digest, image.manifest_digest);
    let containerd_dir = short_tempdir();
    let containerd = Containerd::start(containerd_dir.path());
    let reference = format!("{}/{repo}:v1", c.host);
    ok(&mut containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &creds,
        &reference,
    ]));
    let row = containerd.image_row("ls", &reference);
    assert_eq!(row.get(2), Some(&served.digest), "ctr images ls: {row:?}");
    let check = containerd.image_row("check", &reference).join(" ");
    assert!(check.contains(" complete ("), "ctr images check: {check}");

    // A token one replica issued is good on the others (shared signing
    // key); tags and catalog agree on all three.
    let token: Value = json_of(
        http.get(a.url(&format!(
            "/auth/token?service=berth&scope=repository:{repo}:pull&scope=registry:catalog:*"
        )))
        .basic_auth("admin", Some(&cluster.password)),
    )
    .await;
    let token = token["token"].as_str().expect("a token").to_owned();
    for r in &cluster.replicas {
        let listing = eventually(CONVERGENCE, || async {
            let tags = json_of(
                http.get(r.url(&format!("/v2/{repo}/tags/list")))
                    .bearer_auth(&token),
            )
            .await;
            let catalog = json_of(http.get(r.url("/v2/_catalog")).bearer_auth(&token)).await;
            let got = (tags, catalog);
            if got.0["tags"] == json!(["v1"]) && got.1["repositories"] == json!([repo]) {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
        assert!(listing.is_ok(), "replica {}: {listing:?}", r.name);
    }
}

// ---------------------------------------------------------------------------
// 2. A chunked upload continued on another replica
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_chunked_upload_continues_on_other_replicas() {
    let cluster = Cluster::start("").await;
    let (a, b, c) = (cluster.a(), cluster.b(), cluster.c());
    let http = Client::new();
    let repo = "team/chunked";
    let bytes = random_bytes(1_700_000);
    let digest = sha256(&bytes);
    let (one, two) = bytes.split_at(1_000_000);

    let path = start_upload(&http, a, repo).await;
    let res = patch_chunk(&http, a, &path, 0, one).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");
    assert_eq!(header(&res, "range"), "0-999999");

    let res = patch_chunk(&http, b, &path, one.len(), two).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");
    assert_eq!(header(&res, "range"), "0-1699999");

    // A chunk at the wrong offset, through yet another replica: refused,
    // and the upload is as it was.
    let res = patch_chunk(&http, c, &path, one.len(), two).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{res:?}");
    assert_eq!(header(&res, "range"), "0-1699999");
    let res = patch_chunk(&http, a, &path, 0, one).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{res:?}");

    assert_eq!(upload_range(&http, c, &path).await, "0-1699999");
    let res = finish_upload(&http, c, &path, &digest).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{res:?}");
    assert_eq!(header(&res, "docker-content-digest"), digest);

    assert!(blob_bytes(&http, a, repo, &digest).await == bytes);
    let res = send(http.head(b.url(&format!("/v2/{repo}/blobs/{digest}")))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-length"), "1700000");
    // The finished upload is gone on every replica.
    let res = send(http.get(a.url(&path))).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "{res:?}");
}

/// A chunk streamed in pieces with a pause before each, so that two of
/// them sent at once overlap on the wire.
fn slow_body(bytes: Vec<u8>, piece: usize, pause: Duration) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0usize, move |at| {
        let next = bytes[at..(at + piece).min(bytes.len())].to_vec();
        async move {
            if next.is_empty() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let len = next.len();
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(next)), at + len))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// A client that retries a PATCH after a timeout may land on another
/// replica while the first PATCH is still going: two chunks for the same
/// offset of one upload at once, through two replicas. As on one berth,
/// one is taken and the other refused as out of order, and the finished
/// blob holds exactly the bytes taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chunks_for_one_offset_through_two_replicas_at_once() {
    let cluster = Arc::new(Cluster::start("").await);
    let http = Client::new();
    let repo = "team/twice";
    let path = start_upload(&http, cluster.a(), repo).await;
    let len = 200_000;
    let chunks = [random_bytes(len), random_bytes(len)];

    let mut tasks = tokio::task::JoinSet::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let (cluster, http, path, chunk) =
            (cluster.clone(), http.clone(), path.clone(), chunk.clone());
        tasks.spawn(async move {
            let r = &cluster.replicas[i];
            let res = send(
                http.patch(r.url(&path))
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("0-{}", len - 1))
                    .header("content-length", len.to_string())
                    .body(slow_body(chunk, 20_000, Duration::from_millis(30))),
            )
            .await;
            (i, res.status(), res.headers().get("range").cloned())
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.expect("a PATCH"));
    }
    answers.sort_by_key(|a| a.0);
    let taken: Vec<usize> = answers
        .iter()
        .filter(|a| a.1 == StatusCode::ACCEPTED)
        .map(|a| a.0)
        .collect();
    assert_eq!(taken.len(), 1, "one PATCH taken: {answers:?}");
    let winner = taken[0];

    assert_eq!(
        upload_range(&http, cluster.c(), &path).await,
        format!("0-{}", len - 1)
    );
    let digest = sha256(&chunks[winner]);
    let res = finish_upload(&http, cluster.c(), &path, &digest).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{res:?}");
    for r in &cluster.replicas {
        let got = blob_bytes(&http, r, repo, &digest).await;
        // Which chunk each 20,000 bytes of what is served come from.
        let origin: Vec<String> = got
            .chunks(20_000)
            .enumerate()
            .map(|(n, piece)| {
                let at = n * 20_000..n * 20_000 + piece.len();
                match chunks.iter().position(|c| c.get(at.clone()) == Some(piece)) {
                    Some(i) => i.to_string(),
                    None => "?".into(),
                }
            })
            .collect();
        assert_eq!(
            sha256(&got),
            digest,
            "replica {}: blob {digest} ({winner}'s chunk) holds other bytes; \
             by 20,000 bytes they come from chunks {origin:?}",
            r.name
        );
    }
    // Not 404 BLOB_UPLOAD_UNKNOWN: the upload goes on, at another offset.
    assert_eq!(
        answers[1 - winner].1,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "the other refused as out of order: {answers:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. Concurrent pushes of one blob and one tag
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_one_blob_and_one_tag_through_every_replica() {
    let cluster = Arc::new(Cluster::start("").await);
    let http = Client::new();
    let repo = "team/race";
    let layer = Arc::new(random_bytes(400_000));
    let layer_digest = sha256(&layer);

    // The same blob, four times through each replica at once: half
    // monolithic, half as a POST then a PUT of the whole.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for i in 0..3 {
            let (cluster, http, layer) = (cluster.clone(), http.clone(), layer.clone());
            tasks.spawn(async move {
                let r = &cluster.replicas[i];
                let digest = sha256(&layer);
                if round % 2 == 0 {
                    push_blob(&http, r, repo, &layer).await;
                } else {
                    let path = start_upload(&http, r, repo).await;
                    let sep = if path.contains('?') { '&' } else { '?' };
                    let res = send(
                        http.put(r.url(&format!("{path}{sep}digest={digest}")))
                            .header("content-type", "application/octet-stream")
                            .body(layer.to_vec()),
                    )
                    .await;
                    expect_status(&res, StatusCode::CREATED, r);
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a blob push");
    }
    for r in &cluster.replicas {
        assert!(blob_bytes(&http, r, repo, &layer_digest).await == *layer);
    }

    // Nine different manifests for one tag, three through each replica,
    // all at once.
    let mut bodies = Vec::new();
    for i in 0..9 {
        let config = fresh_config();
        push_blob(&http, &cluster.replicas[i % 3], repo, config.as_bytes()).await;
        let m = manifest(&config, &[(layer_digest.clone(), layer.len())]);
        bodies.push(serde_json::to_vec(&m).unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (cluster, http, body) = (cluster.clone(), http.clone(), body.clone());
        tasks.spawn(async move {
            let r = &cluster.replicas[i % 3];
            let res = put_manifest(&http, r, repo, "latest", &body).await;
            expect_status(&res, StatusCode::CREATED, r);
            assert_eq!(header(&res, "docker-content-digest"), sha256(&body));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a manifest push");
    }
    let pushed: BTreeSet<String> = bodies.iter().map(|b| sha256(b)).collect();

    // The tag ends at one of them, the same on every replica (after at
    // most CONVERGENCE: replicas cache reads).
    let agreed = eventually(CONVERGENCE, || async {
        let mut seen = Vec::new();
        for r in &cluster.replicas {
            let res = send(
                http.head(r.url(&format!("/v2/{repo}/manifests/latest")))
                    .header("accept", OCI_MANIFEST),
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK, "{res:?}");
            seen.push(header(&res, "docker-content-digest"));
        }
        if seen.iter().all(|d| d == &seen[0]) {
            Ok(seen[0].clone())
        } else {
            Err(format!("replicas answer {seen:?}"))
        }
    })
    .await
    .expect("replicas agree on the tag");
    assert!(pushed.contains(&agreed), "{agreed} was never pushed");

    // Every acknowledged manifest stays fetchable by digest everywhere,
    // with its blobs intact; the tag is listed once.
    for r in &cluster.replicas {
        for digest in &pushed {
            assert_eq!(&pull_in_full(&http, r, repo, digest).await, digest);
        }
        let tags = json_of(http.get(r.url(&format!("/v2/{repo}/tags/list")))).await;
        assert_eq!(tags["tags"], json!(["latest"]), "replica {}", r.name);
    }
}

// ---------------------------------------------------------------------------
// 4. A replica killed mid-upload
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_its_replica_being_killed() {
    let mut cluster = Cluster::start("").await;
    let http = Client::new();
    let repo = "team/crash";
    let bytes = random_bytes(1_500_000);
    let digest = sha256(&bytes);
    let acknowledged = 500_000;

    // Something pushed through a before it dies.
    let (before, _) = push_tagged(&http, cluster.a(), repo, "before").await;

    let path = start_upload(&http, cluster.a(), repo).await;
    let res = patch_chunk(&http, cluster.a(), &path, 0, &bytes[..acknowledged]).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");

    // The rest streamed slowly through a, which is killed halfway.
    let sent = Arc::new(AtomicUsize::new(0));
    let rest = bytes[acknowledged..].to_vec();
    let stream = {
        let sent = sent.clone();
        futures_util::stream::unfold(0usize, move |at| {
            let sent = sent.clone();
            let piece = rest[at..(at + 32_768).min(rest.len())].to_vec();
            async move {
                if piece.is_empty() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                sent.fetch_add(piece.len(), Ordering::SeqCst);
                Some((
                    Ok::<_, std::io::Error>(bytes_of(piece.clone())),
                    at + piece.len(),
                ))
            }
        })
    };
    let streaming = tokio::spawn(
        http.patch(cluster.a().url(&path))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.load(Ordering::SeqCst) < 200_000 {
        assert!(Instant::now() < deadline, "the streaming PATCH does not go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.replicas[0].kill();
    let in_flight = streaming.await.unwrap();
    assert!(
        in_flight.is_err(),
        "the PATCH to the killed replica was answered: {in_flight:?}"
    );
    let (b, c) = (cluster.b(), cluster.c());

    // The others go on serving pushes and pulls.
    assert_eq!(pull_in_full(&http, b, repo, "before").await, before);
    let (after, _) = push_tagged(&http, b, repo, "after").await;
    assert_eq!(pull_in_full(&http, c, repo, "after").await, after);

    // The upload shows what was acknowledged, and the client finishes it
    // elsewhere from there.
    assert_eq!(
        upload_range(&http, b, &path).await,
        format!("0-{}", acknowledged - 1)
    );
    // Until the dead replica's hold on the upload runs out (seconds), b
    // answers 416 with the same Range: the upload is busy, try again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let res = loop {
        let res = patch_chunk(&http, b, &path, acknowledged, &bytes[acknowledged..]).await;
        if res.status() != StatusCode::RANGE_NOT_SATISFIABLE || Instant::now() > deadline {
            break res;
        }
        assert_eq!(header(&res, "range"), format!("0-{}", acknowledged - 1));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");
    assert_eq!(header(&res, "range"), format!("0-{}", bytes.len() - 1));
    let res = finish_upload(&http, c, &path, &digest).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{res:?}");
    assert!(blob_bytes(&http, b, repo, &digest).await == bytes);
    assert!(blob_bytes(&http, c, repo, &digest).await == bytes);
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

// ---------------------------------------------------------------------------
// 5. Events delivered exactly once
// ---------------------------------------------------------------------------

/// The push events the receiver got: (event id, tag, digest, replica that
/// delivered it), one for each event of each request.
fn push_events(receiver: &Receiver) -> Vec<(String, String, String, String)> {
    receiver
        .received()
        .iter()
        .flat_map(|got| {
            let deliverer = got
                .headers
                .get("x-replica")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            let body: Value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
            body["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["action"] == "push")
                .map(move |e| {
                    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (
                        s(&e["id"]),
                        s(&e["target"]["tag"]),
                        s(&e["target"]["digest"]),
                        deliverer.clone(),
                    )
                })
        })
        .collect()
}

/// Waits (up to `limit`) until every tag of `pushed` arrived, then
/// `linger` more for duplicates; asserts each push arrived exactly once.
/// Returns the replicas that delivered, in order of arrival.
async fn expect_each_once(
    receiver: &Receiver,
    pushed: &HashMap<String, String>,
    limit: Duration,
    linger: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let tags: BTreeSet<String> = push_events(receiver).into_iter().map(|e| e.1).collect();
        if pushed.keys().all(|t| tags.contains(t)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the receiver lacks pushes of {:?}; got {:?}",
            pushed
                .keys()
                .filter(|t| !tags.contains(*t))
                .collect::<Vec<_>>(),
            push_events(receiver)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(linger).await;
    let events: Vec<_> = push_events(receiver)
        .into_iter()
        .filter(|e| pushed.contains_key(&e.1))
        .collect();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *by_id.entry(&e.0).or_default() += 1;
    }
    // tag (event id): the replicas that delivered it, for each event
    // delivered more than once.
    let mut duplicated = BTreeSet::new();
    for e in events.iter().filter(|e| by_id[e.0.as_str()] > 1) {
        let by: Vec<&str> = events
            .iter()
            .filter(|other| other.0 == e.0)
            .map(|other| other.3.as_str())
            .collect();
        duplicated.insert(format!("{} ({}): {}", e.1, e.0, by.join(", ")));
    }
    assert!(
        duplicated.is_empty(),
        "{} of {} events delivered more than once (tag (event id): delivered by):\n{}",
        duplicated.len(),
        pushed.len(),
        duplicated.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(events.len(), pushed.len(), "{events:#?}");
    for (_, tag, digest, _) in &events {
        assert_eq!(&pushed[tag], digest, "the event of {tag}");
    }
    events.into_iter().map(|e| e.3).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_by_one_replica_and_taken_over_when_it_dies() {
    let receiver = Receiver::start(0).await;
    let url = receiver.url();
    // Every replica has the same webhook (by name); each adds a header
    // naming itself, so the receiver tells which one delivered.
    let mut cluster = Cluster::start_with(true, |name| {
        format!(
            "[events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\n\n\
             [[events.webhooks]]\nname = \"hook\"\nurl = \"{url}\"\nactions = [\"push\"]\n\
             headers = {{ X-Replica = \"{name}\" }}\n"
        )
    })
    .await;
    let http = Client::new();
    let repo = "team/events";

    // Twelve tags, spread over the three replicas, four at a time.
    let mut pushed = HashMap::new();
    for round in 0..4 {
        let pushes = (0..3).map(|i| {
            let tag = format!("t{}", round * 3 + i);
            let (http, r) = (&http, &cluster.replicas[i]);
            async move {
                let (digest, _) = push_tagged(http, r, repo, &tag).await;
                (tag, digest)
            }
        });
        pushed.extend(futures_util::future::join_all(pushes).await);
    }
    let deliverers = expect_each_once(
        &receiver,
        &pushed,
        Duration::from_secs(30),
        Duration::from_secs(3),
    )
    .await;

    // Kill the replica that delivered last (any one, if none said).
    let holder = deliverers
        .last()
        .and_then(|name| cluster.replicas.iter().position(|r| r.name == name))
        .unwrap_or(0);
    println!(
        "deliveries by replica: {deliverers:?}; killing {}",
        cluster.replicas[holder].name
    );
    cluster.replicas[holder].kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != holder).collect();

    let mut more = HashMap::new();
    for i in 0..6 {
        let tag = format!("after{i}");
        let r = &cluster.replicas[survivors[i % 2]];
        let (digest, _) = push_tagged(&http, r, repo, &tag).await;
        more.insert(tag, digest);
    }
    // Another replica takes over the delivery within a lease's lifetime.
    let deliverers = expect_each_once(
        &receiver,
        &more,
        Duration::from_secs(40),
        Duration::from_secs(3),
    )
    .await;
    let dead = cluster.replicas[holder].name;
    assert!(
        deliverers.iter().all(|d| d != dead),
        "the killed replica {dead} delivered: {deliverers:?}"
    );
    // And nothing from before was delivered again.
    let all = push_events(&receiver);
    assert_eq!(all.len(), pushed.len() + more.len(), "{all:#?}");
}

// ---------------------------------------------------------------------------
// 6. Garbage collection while other replicas take pushes
// ---------------------------------------------------------------------------

/// Uploads a blob through `r` unless it is there already, uploading again
/// when berth refuses it as being collected (as clients retry: after a
/// pause, so that a collection slow to remove what it marked does not use
/// up the retries in a second).
async fn ensure_blob(
    c: &Client,
    r: &Replica,
    repo: &str,
    bytes: &[u8],
    retries: &AtomicUsize,
) -> String {
    let digest = sha256(bytes);
    let res = send(c.head(r.url(&format!("/v2/{repo}/blobs/{digest}")))).await;
    if res.status() == StatusCode::OK {
        return digest;
    }
    loop {
        let res = send(
            c.post(r.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                .body(bytes.to_vec()),
        )
        .await;
        match res.status() {
            StatusCode::CREATED => return digest,
            StatusCode::BAD_REQUEST => {
                let e: Value = res.json().await.unwrap();
                assert_eq!(e["errors"][0]["code"], "BLOB_UPLOAD_INVALID", "{e}");
                assert!(
                    retries.fetch_add(1, Ordering::Relaxed) < 1000,
                    "uploads keep being refused"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("replica {}: blob upload answered {other}", r.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_while_pushing_through_other_replicas_keeps_every_acknowledged_image() {
    // No grace period: whatever nothing references is garbage at once.
    let cluster = Arc::new(
        Cluster::start(
            "[gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\nupload_max_age_seconds = 3600\n",
        )
        .await,
    );
    let http = Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));

    // Collections back to back: `berth gc` with replica a's config, then
    // one started through replica a's admin API, and so on.
    let collector = {
        let (cluster, stop, runs, http) =
            (cluster.clone(), stop.clone(), runs.clone(), http.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let cluster2 = cluster.clone();
                let collected = tokio::task::spawn_blocking(move || cluster2.gc())
                    .await
                    .unwrap();
                let res = send(
                    http.post(cluster.a().url("/admin/v1/gc"))
                        .basic_auth("admin", Some(&cluster.password)),
                )
                .await;
                assert!(
                    res.status().is_success() || res.status() == StatusCode::CONFLICT,
                    "{res:?}"
                );
                if collected.is_some() {
                    runs.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Pushes through b and c: a shared base layer, a layer and a config
    // of each image's own.
    let retries = Arc::new(AtomicUsize::new(0));
    let base = Arc::new(random_bytes(20_000));
    let mut pushers = tokio::task::JoinSet::new();
    for i in [1usize, 2] {
        let (cluster, http, runs, retries, base) = (
            cluster.clone(),
            http.clone(),
            runs.clone(),
            retries.clone(),
            base.clone(),
        );
        pushers.spawn(async move {
            let r = &cluster.replicas[i];
            let repo = format!("gc/{}", r.name);
            let (mut accepted, mut refused) = (Vec::new(), 0);
            let mut n = 0;
            // With no grace period, a collection between a blob's upload
            // and the manifest's push refuses the push; on a loaded machine
            // collections can catch every one of the first pushes, so each
            // pusher goes on until one of its images is accepted.
            while n < 15 || runs.load(Ordering::Relaxed) < 3 || accepted.is_empty() {
                n += 1;
                assert!(
                    n < 400,
                    "collections do not finish, or every push is refused"
                );
                let config = fresh_config();
                let layer = random_bytes(5000);
                let mut layers = Vec::new();
                for bytes in [&base[..], &layer] {
                    layers.push((
                        ensure_blob(&http, r, &repo, bytes, &retries).await,
                        bytes.len(),
                    ));
                }
                ensure_blob(&http, r, &repo, config.as_bytes(), &retries).await;
                let body = serde_json::to_vec(&manifest(&config, &layers)).unwrap();
                let tag = format!("t{n}");
                let res = put_manifest(&http, r, &repo, &tag, &body).await;
                match res.status() {
                    StatusCode::CREATED => accepted.push((repo.clone(), tag, sha256(&body))),
                    StatusCode::BAD_REQUEST => {
                        let e: Value = res.json().await.unwrap();
                        assert_eq!(e["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{e}");
                        refused += 1;
                    }
                    other => panic!("replica {}: manifest PUT answered {other}", r.name),
                }
            }
            (accepted, refused)
        });
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    while let Some(done) = pushers.join_next().await {
        let (a, r) = done.expect("a pusher");
        accepted.extend(a);
        refused += r;
    }
    stop.store(true, Ordering::Relaxed);
    collector.await.expect("the collector");
    println!(
        "{} pushes accepted, {refused} refused, {} blob uploads retried, during {} collections",
        accepted.len(),
        retries.load(Ordering::Relaxed),
        runs.load(Ordering::Relaxed)
    );
    assert!(!accepted.is_empty());

    // One more collection once the pushes are done; then every acknowledged
    // image pulls in full through every replica.
    cluster.gc_once();
    for r in &cluster.replicas {
        for (repo, tag, digest) in &accepted {
            assert_eq!(
                &pull_in_full(&http, r, repo, tag).await,
                digest,
                "{repo}:{tag}"
            );
        }
    }
}

/// The README's example config works: three replicas on it serve each
/// other's pushes, to a client that logs in with the README's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_replica_config_runs_three_replicas() {
    use base64::Engine;
    let cluster = Cluster::start_from_readme().await;
    let login =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", cluster.password));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {login}").parse().unwrap(),
    );
    let http = Client::builder().default_headers(headers).build().unwrap();
    let (digest, _) = push_tagged(&http, cluster.a(), "team/readme", "1.0").await;
    assert_eq!(
        pull_in_full(&http, cluster.b(), "team/readme", "1.0").await,
        digest
    );
    assert_eq!(
        pull_in_full(&http, cluster.c(), "team/readme", "1.0").await,
        digest
    );
    let anonymous = send(Client::new().get(cluster.b().url("/v2/team/readme/tags/list"))).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

impl Cluster {
    /// Runs SQL in the replicas' database, as another process would.
    fn sql(&self, statement: &str) {
        let out = Command::new("psql")
            .args(["--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1"])
            .args(["--dbname", &self.shared.database, "--command", statement])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "{out:?}");
    }
}

/// While any process collects garbage (here: a lease row as a collector
/// elsewhere holds it), every replica says so and refuses to start another.
#[tokio::test]
async fn a_collection_anywhere_is_seen_by_every_replica() {
    let cluster = Cluster::start_secure("").await;
    let http = Client::new();
    let admin = |r: &Replica, post: bool| {
        let url = r.url("/admin/v1/gc");
        let request = if post { http.post(url) } else { http.get(url) };
        send(request.basic_auth("admin", Some(&cluster.password)))
    };
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 60_000;
    cluster.sql(&format!(
        "INSERT INTO leases (name, holder, expires_at) VALUES ('gc', 'elsewhere', {until})"
    ));
    for r in &cluster.replicas {
        let status: Value = admin(r, false).await.json().await.unwrap();
        assert_eq!(status["running"], true, "replica {}: {status}", r.name);
        let res = admin(r, true).await;
        expect_status(&res, StatusCode::CONFLICT, r);
    }
    let refused = cluster.try_manage(&["gc"]).unwrap_err();
    assert!(
        refused.contains("running in another berth process"),
        "{refused}"
    );

    cluster.sql("DELETE FROM leases WHERE name = 'gc'");
    let res = admin(cluster.b(), true).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{res:?}");
}
