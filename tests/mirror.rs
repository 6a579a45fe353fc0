//! Pull-through mirrors end to end, every part real and on loopback.
//!
//! The upstream is a second berth with token authentication whose realm
//! is on another port (a TCP forwarder, as auth.docker.io is another host
//! than registry-1.docker.io), and Debian's docker-registry (Distribution)
//! behind htpasswd (Basic). Between berth and the upstream berth sits a
//! small HTTP proxy in this test that counts every request (method and
//! path, as an access log would) and, when asked, answers 429 or 503 in
//! the upstream's stead, or corrupts blob bytes; stopping it refuses
//! connections.
//!
//! The clients are the real ones: containerd with a hosts.toml naming
//! berth as the mirror of docker.io (`?ns=docker.io`), podman with a
//! registries.conf mirror, skopeo and docker through the path prefix, and
//! docker's daemon with `registry-mirrors` (unprefixed names).

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use clients::{
    Containerd, Daemon, Docker, Image, Podman, Ran, layout_blob, ok, read, run, short_tempdir,
};
use common::Berth;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "upstream-admin-password";

// ---------------------------------------------------------------------------
// The upstream berth, its realm on another port
// ---------------------------------------------------------------------------

/// Forwards TCP connections on a port of its own to `target`: the token
/// service's "other host".
struct Forwarder {
    port: u16,
    target: Arc<Mutex<Option<SocketAddr>>>,
}

impl Forwarder {
    fn start() -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let to = target.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Some(addr) = *to.lock().unwrap() else {
                    continue;
                };
                thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(addr) else {
                        return;
                    };
                    let pipe = |mut from: TcpStream, mut to: TcpStream| {
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        })
                    };
                    let a = pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    let b = pipe(server, client);
                    let _ = (a.join(), b.join());
                });
            }
        });
        Forwarder { port, target }
    }
}

/// A berth that plays an internet registry: credentials needed, tokens
/// from a realm on another port, a robot the mirror authenticates as.
struct Upstream {
    berth: Berth,
    _realm: Forwarder,
    robot: String,
    secret: String,
}

impl Upstream {
    fn start() -> Upstream {
        let realm = Forwarder::start();
        let work = tempfile::tempdir().unwrap();
        let password = work.path().join("admin-password");
        fs::write(&password, ADMIN_PASSWORD).unwrap();
        let berth = Berth::start_secure(&format!(
            "[auth]\nrealm = \"http://127.0.0.1:{}/auth/token\"\ninitial_admin_password_file = {:?}\n",
            realm.port,
            password.display().to_string()
        ));
        *realm.target.lock().unwrap() = Some(berth.host.parse().unwrap());
        let out = berth.manage(&["robot", "add", "mirror"]);
        let secret = out
            .lines()
            .find_map(|l| l.strip_prefix("secret: "))
            .unwrap_or_else(|| panic!("no secret in `berth robot add`:\n{out}"))
            .trim()
            .to_owned();
        berth.manage(&["grant", "mirror", "*", "pull"]);
        Upstream {
            berth,
            _realm: realm,
            robot: "mirror".into(),
            secret,
        }
    }

    /// Pushes `image` as `repo:tag` with skopeo, digests kept.
    fn push(&self, image: &Image, repo: &str, tag: &str) {
        skopeo_push(
            image,
            &format!("{}/{repo}:{tag}", self.berth.host),
            &format!("admin:{ADMIN_PASSWORD}"),
        );
    }
}

fn skopeo_push(image: &Image, dest: &str, creds: &str) {
    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        &image.oci_ref(),
        &format!("docker://{dest}"),
    ]));
}

// ---------------------------------------------------------------------------
// The proxy between berth and the upstream
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Pass,
    /// Answer every request with this status.
    Status(u16),
    /// Flip the first byte of every blob body.
    CorruptBlobs,
    /// Answer nothing for this long, then 504.
    Hang(Duration),
}

struct ProxyState {
    target: String,
    mode: Mutex<Mode>,
    /// `(method, path, status)` of every request.
    log: Mutex<Vec<(String, String, u16)>>,
    http: reqwest::Client,
}

/// An HTTP proxy in front of an upstream, counting what it is asked.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            target: target.to_owned(),
            mode: Mutex::new(Mode::Pass),
            log: Mutex::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(forward).with_state(shared);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Proxy {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests answered so far, `(method, path)`: those the upstream
    /// served (not the 401s that send a client for a token).
    fn log(&self) -> Vec<(String, String)> {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, status)| *status != 401)
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect()
    }

    /// How many `method` requests went to a path containing `part`.
    fn count(&self, method: &str, part: &str) -> usize {
        self.log()
            .iter()
            .filter(|(m, p)| m == method && p.contains(part))
            .count()
    }

    /// Stops listening: connections are refused from now on.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mode = *state.mode.lock().unwrap();
    let record = |status: u16| {
        state
            .log
            .lock()
            .unwrap()
            .push((method.to_string(), path.clone(), status));
    };
    if let Mode::Hang(time) = mode {
        record(504);
        tokio::time::sleep(time).await;
        return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if let Mode::Status(status) = mode {
        record(status);
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        let body = json!({"errors": [{"code": "TOOMANYREQUESTS", "message": format!("the proxy answers {status}")}]});
        return (status, [("retry-after", "3600")], axum::Json(body)).into_response();
    }
    let mut forwarded = state
        .http
        .request(method.clone(), format!("{}{path}", state.target));
    for (name, value) in request.headers() {
        if name != "host" {
            forwarded = forwarded.header(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
    let answer = match forwarded.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            record(502);
            return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    record(answer.status().as_u16());
    let mut response = axum::response::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let corrupt = mode == Mode::CorruptBlobs && path.contains("/blobs/");
    let mut first = true;
    let stream = answer.bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        if corrupt && first && !chunk.is_empty() {
            first = false;
            let mut bytes = chunk.to_vec();
            bytes[0] ^= 0xff;
            return Ok(bytes::Bytes::from(bytes));
        }
        Ok::<_, reqwest::Error>(chunk)
    });
    response
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

// ---------------------------------------------------------------------------
// berth with mirrors, and asking it things
// ---------------------------------------------------------------------------

/// A berth needing credentials, with `config` (its `[[mirrors]]`), that
/// lets anyone pull through `docker.io`, and the admin's password.
fn mirror_berth(config: &str) -> (Berth, String) {
    let work = tempfile::tempdir().unwrap();
    let password = work.path().join("admin-password");
    fs::write(&password, "mirror-admin-password").unwrap();
    let berth = Berth::start_secure(&format!(
        "[auth]\ninitial_admin_password_file = {:?}\n\n{config}",
        password.display().to_string()
    ));
    berth.manage(&["grant", "anonymous", "docker.io", "pull"]);
    (berth, "mirror-admin-password".to_owned())
}

fn docker_io_mirror(upstream: &str, robot: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[mirrors]]\nnamespace = \"docker.io\"\nupstream = \"{upstream}\"\n\
         username = \"{robot}\"\npassword = \"{secret}\"\n{extra}\n"
    )
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

thread_local! {
    /// A background thread's runtime, for the whole of its life.
    static BACKGROUND: tokio::runtime::Runtime = runtime();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A GET through berth with the admin's credentials: status, headers, body.
fn get(berth: &Berth, password: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    get_from(&berth.url(""), &basic("admin", password), path)
}

fn admin_json(berth: &Berth, password: &str, path: &str) -> Value {
    let (status, _, body) = get(berth, password, path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The value of a Prometheus sample `name{labels}` (labels as printed).
fn metric(berth: &Berth, password: &str, series: &str) -> f64 {
    let (_, _, body) = get(berth, password, "/metrics");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Pulls `reference` through berth with skopeo into a fresh OCI layout
/// under `work`; returns the layout, or the failed run.
fn skopeo_pull(work: &Path, berth: &Berth, reference: &str, name: &str) -> Result<PathBuf, Ran> {
    let dest = work.join(name);
    let _ = fs::remove_dir_all(&dest);
    let ran = run(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/{reference}", berth.host),
        &format!("oci:{}:pulled", dest.display()),
    ]));
    if ran.success() { Ok(dest) } else { Err(ran) }
}

/// Asserts the layout holds exactly `image`'s manifest and blobs, byte for
/// byte.
fn assert_same_image(layout: &Path, image: &Image) {
    let index: Value = serde_json::from_slice(&read(&layout.join("index.json"))).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"], image.manifest_digest,
        "pulled index.json: {index}"
    );
    for digest in image.blobs() {
        let original = read(&layout_blob(&image.layout, digest));
        let copy = read(&layout_blob(layout, digest));
        assert!(
            original == copy,
            "pulled blob {digest} differs from the upstream's"
        );
    }
}

fn blob_file(berth: &Berth, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    berth
        .data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

fn docker_with_mirror(dir: &Path, mirror: &Berth) -> Docker {
    Docker::start_with(
        dir,
        json!({ "registry-mirrors": [format!("http://{}", mirror.host)] }),
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Every client pulls through the mirror, byte-identical to the upstream;
/// with the upstream stopped, cached tags still pull with every client and
/// an uncached one fails saying why.
#[test]
fn every_client_pulls_through_the_mirror_and_keeps_pulling_when_the_upstream_stops() {
    let work = short_tempdir();
    let upstream = Upstream::start();
    let mut proxy = Proxy::start(&upstream.berth.url(""));
    let image = Image::generate(work.path(), "base", "1.0", 2, 1_000_000);
    upstream.push(&image, "library/base", "1.0");
    // Distribution with htpasswd: an upstream that wants Basic.
    let dist = Distribution::start(work.path());
    let other = Image::generate(work.path(), "tool", "2", 1, 500_000);
    skopeo_push(
        &other,
        &format!("{}/org/tool:2", dist.host),
        "puller:puller-password",
    );

    let config = format!(
        "{}\n[[mirrors]]\nnamespace = \"registry.example\"\nupstream = \"http://{}\"\n\
         username = \"puller\"\npassword = \"puller-password\"\n",
        docker_io_mirror(
            &proxy.url(),
            &upstream.robot,
            &upstream.secret,
            "tag_ttl_seconds = 1\nunprefixed = true"
        ),
        dist.host
    );
    let (berth, password) = mirror_berth(&config);
    berth.manage(&["grant", "anonymous", "registry.example", "pull"]);

    // skopeo through the path prefix; docker.io/base is library/base.
    let layout = skopeo_pull(work.path(), &berth, "docker.io/base:1.0", "skopeo")
        .unwrap_or_else(|r| panic!("{}", r.report()));
    assert_same_image(&layout, &image);
    // The Basic upstream.
    let layout = skopeo_pull(work.path(), &berth, "registry.example/org/tool:2", "dist")
        .unwrap_or_else(|r| panic!("{}", r.report()));
    assert_same_image(&layout, &other);

    // containerd, as a kubelet's: hosts.toml names berth as docker.io's
    // mirror, and every request carries ?ns=docker.io.
    let hosts = work.path().join("certs.d");
    fs::create_dir_all(hosts.join("docker.io")).unwrap();
    fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            berth.host
        ),
    )
    .unwrap();
    let containerd = Containerd::start(&work.path().join("c"));
    let ctr_pull = || {
        run(&mut containerd.ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            "docker.io/library/base:1.0",
        ]))
    };
    let ran = ctr_pull();
    assert!(ran.success(), "{}", ran.report());
    let row = containerd.image_row("ls", "docker.io/library/base:1.0");
    assert_eq!(row.get(2), Some(&image.manifest_digest), "{row:?}");
    assert!(
        proxy.log().iter().all(|(_, p)| !p.contains("ns=")),
        "berth passed ns= upstream"
    );

    // podman with a registries.conf mirror of docker.io.
    let podman = Podman::new(&work.path().join("p"));
    let registries = work.path().join("registries.conf");
    fs::write(
        &registries,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n\
             [[registry.mirror]]\nlocation = \"{}/docker.io\"\ninsecure = true\n",
            berth.host
        ),
    )
    .unwrap();
    let podman_pull = || {
        let mut cmd = podman.cmd(&["pull", "docker.io/library/base:1.0"]);
        cmd.env("CONTAINERS_REGISTRIES_CONF", &registries);
        run(&mut cmd)
    };
    let ran = podman_pull();
    assert!(ran.success(), "{}", ran.report());
    let digest = ok(&mut podman.cmd(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        "docker.io/library/base:1.0",
    ]));
    assert_eq!(digest.trim(), image.manifest_digest);

    // docker: through the path prefix, and through registry-mirrors, which
    // names Docker Hub's images without a namespace.
    let docker = docker_with_mirror(&work.path().join("d"), &berth);
    let prefixed = format!("{}/docker.io/library/base:1.0", berth.host);
    let docker_pull = |reference: &str| run(&mut docker.cmd(&["pull", reference]));
    let ran = docker_pull(&prefixed);
    assert!(ran.success(), "{}", ran.report());
    assert!(
        docker
            .inspect(&prefixed, "{{json .RepoDigests}}")
            .contains(&image.manifest_digest),
        "docker's digest of {prefixed}"
    );
    let ran = docker_pull("base:1.0");
    assert!(ran.success(), "{}", ran.report());
    assert!(
        docker
            .inspect("base:1.0", "{{json .RepoDigests}}")
            .contains(&image.manifest_digest),
        "docker's digest of base:1.0"
    );

    // One upstream fetch of each blob, however many clients pulled.
    for digest in image.blobs().iter().skip(1) {
        assert_eq!(
            proxy.count("GET", &format!("/blobs/{digest}")),
            1,
            "{digest}: {:?}",
            proxy.log()
        );
    }

    // The upstream stops: berth and the proxy are gone.
    drop(upstream);
    proxy.stop();
    thread::sleep(Duration::from_millis(1100)); // past tag_ttl: cached tags go unconfirmed

    let layout = skopeo_pull(work.path(), &berth, "docker.io/library/base:1.0", "stale")
        .unwrap_or_else(|r| panic!("{}", r.report()));
    assert_same_image(&layout, &image);
    ok(&mut containerd.ctr(&["images", "rm", "docker.io/library/base:1.0"]));
    let ran = ctr_pull();
    assert!(ran.success(), "{}", ran.report());
    ok(&mut podman.cmd(&["rmi", "docker.io/library/base:1.0"]));
    let ran = podman_pull();
    assert!(ran.success(), "{}", ran.report());
    ok(&mut docker.cmd(&["rmi", &prefixed, "base:1.0"]));
    let ran = docker_pull(&prefixed);
    assert!(ran.success(), "{}", ran.report());
    let ran = docker_pull("base:1.0");
    assert!(ran.success(), "{}", ran.report());

    // Served stale: said so in a Warning, and counted.
    let (status, headers, _) = get(
        &berth,
        &password,
        "/v2/docker.io/library/base/manifests/1.0",
    );
    assert_eq!(status, 200);
    let warning = headers
        .get("warning")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        warning.starts_with("299 - \"") && warning.contains("upstream failed"),
        "{warning:?}"
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_stale_serves_total{mirror=\"docker.io\"}"
        ) >= 1.0
    );

    // A tag never cached: a clear error naming the upstream's answer.
    let ran =
        skopeo_pull(work.path(), &berth, "docker.io/library/base:2.0", "missing").unwrap_err();
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("not cached, and the upstream failed"),
        "{}",
        ran.report()
    );
    let ran = docker_pull(&format!("{}/docker.io/library/base:2.0", berth.host));
    assert!(!ran.success());
    assert!(
        ran.stderr.contains("not cached, and the upstream failed"),
        "{}",
        ran.report()
    );
}

// ---------------------------------------------------------------------------
// Distribution, the plain upstream
// ---------------------------------------------------------------------------

/// Debian's docker-registry on a free port, with an htpasswd file (user
/// `puller`): it asks for Basic credentials.
struct Distribution {
    host: String,
    _daemon: Daemon,
}

impl Distribution {
    fn start(work: &Path) -> Distribution {
        let dir = work.join("distribution");
        fs::create_dir_all(dir.join("data")).unwrap();
        ok(Command::new("htpasswd")
            .arg("-Bbc")
            .arg(dir.join("htpasswd"))
            .args(["puller", "puller-password"]));
        let port = common::free_port();
        fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("data").display(),
                dir.join("htpasswd").display()
            ),
        )
        .unwrap();
        let mut daemon = Daemon::start(
            "docker-registry",
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml")),
            dir.join("registry.log"),
        );
        let url = format!("http://127.0.0.1:{port}/v2/");
        daemon.wait_ready(|| {
            run(Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--fail-with-body",
                    &url,
                ])
                .arg("-u")
                .arg("puller:puller-password"))
        });
        Distribution {
            host: format!("127.0.0.1:{port}"),
            _daemon: daemon,
        }
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP pushes and pulls, with credentials
// ---------------------------------------------------------------------------

/// `len` random bytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

/// Pushes a config and one layer of `layer` bytes as `repo:tag` to a
/// registry taking Basic `auth`; returns the manifest digest and the
/// digests and sizes of the config and layer.
async fn push_raw(
    c: &reqwest::Client,
    base: &str,
    auth: &str,
    repo: &str,
    tag: &str,
    layer: Vec<u8>,
) -> (String, Vec<(String, usize)>) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":"{}"}}"#,
        common::sha256(&random_bytes(16))
    )
    .into_bytes();
    let mut blobs = Vec::new();
    for bytes in [config, layer] {
        let digest = common::sha256(&bytes);
        let size = bytes.len();
        let r = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("authorization", auth)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{r:?}");
        blobs.push((digest, size));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].0, "size": blobs[0].1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[1].0, "size": blobs[1].1}],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("authorization", auth)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    (common::sha256(&body), blobs)
}

/// Pulls `repo:reference` through berth as a client would: the manifest,
/// then each blob, hashed as it streams. Returns the manifest's digest and
/// each blob's digest as computed from its bytes.
async fn pull_raw(
    c: &reqwest::Client,
    berth: &str,
    auth: &str,
    repo: &str,
    reference: &str,
) -> Result<(String, Vec<String>), String> {
    use futures_util::StreamExt;
    use sha2::Digest as _;
    let r = c
        .get(format!("{berth}/v2/{repo}/manifests/{reference}"))
        .header("authorization", auth)
        .header("accept", ACCEPT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!(
            "{}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    let manifest: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let mut digests = Vec::new();
    let wanted = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
    for blob in wanted {
        let digest = blob["digest"].as_str().unwrap();
        let r = c
            .get(format!("{berth}/v2/{repo}/blobs/{digest}"))
            .header("authorization", auth)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!(
                "{digest}: {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ));
        }
        let mut hasher = sha2::Sha256::new();
        let mut stream = r.bytes_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(|e| format!("{digest}: {e}"))?);
        }
        digests.push(format!("sha256:{}", hex::encode(hasher.finalize())));
    }
    Ok((common::sha256(&body), digests))
}

fn upstream_auth() -> String {
    basic("admin", ADMIN_PASSWORD)
}

/// 20 clients pull one uncached 200 MiB image at once: each gets the same
/// bytes, and the upstream serves each blob once.
#[test]
fn twenty_concurrent_cold_pulls_fetch_each_blob_once() {
    const CLIENTS: usize = 20;
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.berth.url(""));
    let (berth, password) = mirror_berth(&docker_io_mirror(
        &proxy.url(),
        &upstream.robot,
        &upstream.secret,
        "",
    ));
    let rt = runtime();
    let c = reqwest::Client::new();
    let (manifest, blobs) = rt.block_on(push_raw(
        &c,
        &upstream.berth.url(""),
        &upstream_auth(),
        "library/big",
        "1",
        random_bytes(200 << 20),
    ));
    let auth = basic("admin", &password);
    let pulls: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (c, base, auth) = (c.clone(), berth.url(""), auth.clone());
            rt.spawn(async move { pull_raw(&c, &base, &auth, "docker.io/library/big", "1").await })
        })
        .collect();
    let expected: Vec<String> = blobs.iter().map(|(d, _)| d.clone()).collect();
    for pull in pulls {
        let (digest, got) = rt
            .block_on(pull)
            .unwrap()
            .unwrap_or_else(|e| panic!("a pull failed: {e}"));
        assert_eq!(digest, manifest);
        assert_eq!(got, expected, "a client got other bytes");
    }
    for (digest, _) in &blobs {
        assert_eq!(
            proxy.count("GET", &format!("/blobs/{digest}")),
            1,
            "{digest}: {:?}",
            proxy.log()
        );
    }
    assert_eq!(proxy.count("GET", "/manifests/"), 1, "{:?}", proxy.log());
    let fetched = metric(
        &berth,
        &password,
        "berth_mirror_upstream_bytes_total{mirror=\"docker.io\"}",
    );
    let image_bytes: usize = blobs.iter().map(|(_, size)| size).sum();
    assert!(
        fetched >= image_bytes as f64 && fetched < (image_bytes + 10_000) as f64,
        "{fetched} bytes fetched for {image_bytes}"
    );
}

/// A tag moved upstream is picked up once its TTL passed, not before, and
/// the check is a HEAD: the manifest is fetched (by digest) only when it
/// moved.
#[test]
fn a_moved_tag_is_checked_with_a_head_after_its_ttl() {
    const TTL: Duration = Duration::from_secs(4);
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.berth.url(""));
    let (berth, password) = mirror_berth(&docker_io_mirror(
        &proxy.url(),
        &upstream.robot,
        &upstream.secret,
        &format!("tag_ttl_seconds = {}", TTL.as_secs()),
    ));
    let rt = runtime();
    let c = reqwest::Client::new();
    let auth = basic("admin", &password);
    let push = |n: usize| {
        rt.block_on(push_raw(
            &c,
            &upstream.berth.url(""),
            &upstream_auth(),
            "library/app",
            "latest",
            random_bytes(1000 + n),
        ))
        .0
    };
    let pull = || {
        rt.block_on(pull_raw(
            &c,
            &berth.url(""),
            &auth,
            "docker.io/library/app",
            "latest",
        ))
        .unwrap()
        .0
    };
    let first = push(1);
    assert_eq!(pull(), first);
    let checked = Instant::now();
    let moved = push(2);
    let seen = proxy.log().len();
    assert_eq!(pull(), first, "the tag was trusted for its TTL");
    assert!(
        proxy.log()[seen..]
            .iter()
            .all(|(_, p)| !p.contains("/manifests/")),
        "asked the upstream within the TTL: {:?}",
        &proxy.log()[seen..]
    );

    thread::sleep(TTL.saturating_sub(checked.elapsed()) + Duration::from_millis(200));
    let seen = proxy.log().len();
    assert_eq!(pull(), moved, "the moved tag was picked up after its TTL");
    let asked: Vec<(String, String)> = proxy.log()[seen..]
        .iter()
        .filter(|(_, p)| p.contains("/manifests/"))
        .cloned()
        .collect();
    assert_eq!(
        asked,
        [
            (
                "HEAD".to_owned(),
                "/v2/library/app/manifests/latest".to_owned()
            ),
            (
                "GET".to_owned(),
                format!("/v2/library/app/manifests/{moved}")
            ),
        ],
        "a HEAD checked the tag; only the new manifest was fetched"
    );

    let checked = Instant::now();
    thread::sleep(TTL.saturating_sub(checked.elapsed()) + Duration::from_millis(200));
    let seen = proxy.log().len();
    assert_eq!(pull(), moved);
    let log = proxy.log();
    let asked: Vec<&(String, String)> = log[seen..]
        .iter()
        .filter(|(_, p)| p.contains("/manifests/"))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].0, "HEAD",
        "an unmoved tag costs one HEAD: {asked:?}"
    );
}

/// What the upstream gets wrong never reaches storage: bytes that do not
/// match their digest fail the client's pull and leave nothing behind; a
/// 429 counts as an upstream failure (a cached tag is served stale, an
/// uncached one fails naming the 429). Pushes into the mirror are refused.
/// What it cached shows in the admin API, the CLI and the metrics at once.
#[test]
fn bad_upstream_answers_are_never_stored_and_the_cache_shows_at_once() {
    let work = short_tempdir();
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.berth.url(""));
    let (berth, password) = mirror_berth(&docker_io_mirror(
        &proxy.url(),
        &upstream.robot,
        &upstream.secret,
        "tag_ttl_seconds = 0\ntimeout_seconds = 1",
    ));
    let image = Image::generate(work.path(), "app", "1", 1, 300_000);
    upstream.push(&image, "library/app", "1");

    // Corrupted blob bytes: the pull fails, nothing is stored.
    proxy.set(Mode::CorruptBlobs);
    let ran = skopeo_pull(work.path(), &berth, "docker.io/library/app:1", "corrupt").unwrap_err();
    assert!(!ran.success());
    for digest in image.blobs().iter().skip(1) {
        assert!(!blob_file(&berth, digest).exists(), "{digest} was stored");
    }
    let uploads: Vec<_> = fs::read_dir(berth.data_dir().join("uploads"))
        .unwrap()
        .collect();
    assert!(uploads.is_empty(), "uploads left behind: {uploads:?}");
    proxy.set(Mode::Status(503));
    let layer = &image.layers[0];
    let (status, _, body) = get(
        &berth,
        &password,
        &format!("/v2/docker.io/library/app/blobs/{layer}"),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("BLOB_UNKNOWN") && body.contains("503"),
        "{body}"
    );

    proxy.set(Mode::Pass);
    let layout = skopeo_pull(work.path(), &berth, "docker.io/library/app:1", "good")
        .unwrap_or_else(|r| panic!("{}", r.report()));
    assert_same_image(&layout, &image);

    // 429: the cached tag is served, said stale; an uncached one fails
    // naming the answer.
    proxy.set(Mode::Status(429));
    let (status, headers, _) = get(&berth, &password, "/v2/docker.io/library/app/manifests/1");
    assert_eq!(status, 200);
    let warning = headers["warning"].to_str().unwrap();
    assert!(warning.contains("429"), "{warning}");
    let (status, _, body) = get(&berth, &password, "/v2/docker.io/library/app/manifests/2");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("MANIFEST_UNKNOWN") && body.contains("429 Too Many Requests"),
        "{body}"
    );
    // An upstream that does not answer within timeout_seconds: the same.
    proxy.set(Mode::Hang(Duration::from_secs(3)));
    let (status, headers, _) = get(&berth, &password, "/v2/docker.io/library/app/manifests/1");
    assert_eq!(status, 200);
    let warning = headers["warning"].to_str().unwrap();
    assert!(warning.contains("timed out"), "{warning}");
    proxy.set(Mode::Pass);

    // Pushes into the mirror: refused, naming it.
    let rt = runtime();
    let c = reqwest::Client::new();
    let auth = basic("admin", &password);
    for (method, path) in [
        (
            reqwest::Method::POST,
            "/v2/docker.io/library/app/blobs/uploads/",
        ),
        (
            reqwest::Method::PUT,
            "/v2/docker.io/library/app/manifests/2",
        ),
        (
            reqwest::Method::DELETE,
            "/v2/docker.io/library/app/manifests/1",
        ),
    ] {
        let (status, body) = rt.block_on(async {
            let r = c
                .request(method.clone(), berth.url(path))
                .header("authorization", &auth)
                .body("{}")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(
            body.contains("DENIED") && body.contains("docker.io is a pull-through mirror of"),
            "{body}"
        );
    }
    // Berth's own namespaces take pushes as ever.
    rt.block_on(push_raw(
        &c,
        &berth.url(""),
        &auth,
        "team/app",
        "1",
        random_bytes(1000),
    ));

    // Visible at once: the mirror, its repository, the counts.
    let mirrors = admin_json(&berth, &password, "/admin/v1/mirrors");
    let mirror = &mirrors[0];
    assert_eq!(mirror["namespace"], "docker.io", "{mirrors}");
    assert_eq!(mirror["repositories"], 1, "{mirrors}");
    assert!(
        mirror["cached_bytes"].as_u64().unwrap() >= 300_000,
        "{mirrors}"
    );
    let repos = admin_json(
        &berth,
        &password,
        "/admin/v1/mirrors/docker.io/repositories",
    );
    let repo = &repos[0];
    assert_eq!(repo["name"], "docker.io/library/app", "{repos}");
    assert_eq!(repo["tag_count"], 1, "{repos}");
    assert!(repo["misses"].as_u64().unwrap() >= 3, "{repos}");
    assert!(repo["hits"].as_u64().unwrap() >= 1, "{repos}");
    assert!(
        repo["last_pull"].is_string() && repo["last_fetch"].is_string(),
        "{repos}"
    );
    let tags = admin_json(
        &berth,
        &password,
        "/admin/v1/repositories/docker.io%2Flibrary%2Fapp/tags",
    );
    assert_eq!(tags[0]["digest"], image.manifest_digest, "{tags}");
    let cli = ok(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "admin",
            "--url",
            &berth.url(""),
            "--user",
            "admin",
            "--password",
            &password,
        ])
        .args(["mirror", "repos", "docker.io"]));
    assert!(
        cli.contains("docker.io/library/app") && cli.contains("HITS"),
        "{cli}"
    );
    let cli = ok(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "admin",
            "--url",
            &berth.url(""),
            "--user",
            "admin",
            "--password",
            &password,
        ])
        .args(["mirror", "list"]));
    assert!(
        cli.contains("docker.io") && cli.contains(&proxy.url()),
        "{cli}"
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_pulls_total{mirror=\"docker.io\",result=\"miss\"}"
        ) >= 3.0
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_pulls_total{mirror=\"docker.io\",result=\"hit\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_upstream_bytes_total{mirror=\"docker.io\"}"
        ) >= 300_000.0
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_upstream_errors_total{mirror=\"docker.io\"}"
        ) >= 3.0
    );
    assert!(
        metric(
            &berth,
            &password,
            "berth_mirror_stale_serves_total{mirror=\"docker.io\"}"
        ) >= 1.0
    );

    // A mirror made through the admin API serves at once; deleting it
    // drops its cache.
    let spec = json!({
        "namespace": "quay.example",
        "upstream": proxy.url(),
        "username": upstream.robot,
        "password": upstream.secret,
    });
    let (status, created) = rt.block_on(async {
        let r = c
            .post(berth.url("/admin/v1/mirrors"))
            .header("authorization", &auth)
            .json(&spec)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 201, "{created}");
    assert!(
        !created.contains(&upstream.secret),
        "the password was shown: {created}"
    );
    // Through the admin API, which the serving berth hears of at once.
    let status = rt.block_on(async {
        c.put(berth.url("/admin/v1/accounts/anonymous/grants/quay.example"))
            .header("authorization", &auth)
            .json(&json!({"actions": ["pull"]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let layout = skopeo_pull(work.path(), &berth, "quay.example/library/app:1", "quay")
        .unwrap_or_else(|r| panic!("{}", r.report()));
    assert_same_image(&layout, &image);
    let status = rt.block_on(async {
        c.delete(berth.url("/admin/v1/mirrors/quay.example"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 204);
    let (status, _, _) = get(
        &berth,
        &password,
        "/admin/v1/repositories/quay.example%2Flibrary%2Fapp",
    );
    assert_eq!(status, 404, "the deleted mirror's cache stayed");
}

/// Eviction removes the bytes of what it evicted by itself, with no
/// garbage collection running (the daily one has not come round).
#[test]
fn eviction_alone_frees_the_disk() {
    let upstream = Upstream::start();
    let (berth, password) = mirror_berth(&docker_io_mirror(
        &upstream.berth.url(""),
        &upstream.robot,
        &upstream.secret,
        "max_bytes = 5000000",
    ));
    let rt = runtime();
    let c = reqwest::Client::new();
    let auth = basic("admin", &password);
    let mut layers = Vec::new();
    for (i, (manifest, blobs)) in push_capped_images(&rt, &c, &upstream)
        .into_iter()
        .enumerate()
    {
        let pulled = rt
            .block_on(pull_raw(
                &c,
                &berth.url(""),
                &auth,
                &format!("docker.io/library/img{i}"),
                "1",
            ))
            .unwrap();
        assert_eq!(pulled.0, manifest);
        layers.push(blobs[1].0.clone());
    }
    wait_evicted(&berth, &password, &layers[0]);
    assert!(blob_file(&berth, &layers[3]).exists());
}

/// Four images of one 1.6 MB layer each, pushed to the upstream as
/// `library/img{i}:1`: more than a 5 MB cap holds once all are cached.
fn push_capped_images(
    rt: &tokio::runtime::Runtime,
    c: &reqwest::Client,
    upstream: &Upstream,
) -> Vec<(String, Vec<(String, usize)>)> {
    (0..4)
        .map(|i| {
            rt.block_on(push_raw(
                c,
                &upstream.berth.url(""),
                &upstream_auth(),
                &format!("library/img{i}"),
                "1",
                random_bytes(1_600_000),
            ))
        })
        .collect()
}

/// Waits until the docker.io mirror holds at most its 5 MB cap and `layer`
/// has left the disk.
fn wait_evicted(berth: &Berth, password: &str, layer: &str) {
    let waited = Instant::now();
    loop {
        let mirror = admin_json(berth, password, "/admin/v1/mirrors/docker.io");
        if mirror["cached_bytes"].as_u64().unwrap() <= 5_000_000
            && !blob_file(berth, layer).exists()
        {
            return;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "not evicted, or still on disk: {mirror}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// With a size cap, the least recently pulled content goes first; garbage
/// collection running all along keeps what was pulled by digest only; a
/// push to berth's own namespace keeps working throughout.
#[test]
fn eviction_and_gc_while_the_cache_fills_and_pushes_go_on() {
    // Long enough for a push to reference what it uploaded before the
    // collector may take it (else the push is refused and uploads again).
    const GRACE: Duration = Duration::from_secs(2);
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.berth.url(""));
    let (berth, password) = mirror_berth(&format!(
        "{}\n[gc]\ninterval_seconds = 0\ngrace_period_seconds = {}\n",
        docker_io_mirror(
            &proxy.url(),
            &upstream.robot,
            &upstream.secret,
            "max_bytes = 5000000"
        ),
        GRACE.as_secs()
    ));
    let rt = runtime();
    let c = reqwest::Client::new();
    let auth = basic("admin", &password);
    let images = push_capped_images(&rt, &c, &upstream);

    // Pushes to team/app and garbage collection, all the while.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each thread with a runtime and client of its own: a client's
    // connections live on the runtime that made them.
    let background = |work: fn(&reqwest::Client, &str, &str, u32) -> Result<(), String>| {
        let (stop, url, auth) = (stop.clone(), berth.url(""), auth.clone());
        thread::spawn(move || {
            let c = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                work(&c, &url, &auth, n)?;
                n += 1;
                thread::sleep(Duration::from_millis(100));
            }
            Ok::<u32, String>(n)
        })
    };
    let pushes = background(|c, url, auth, n| {
        BACKGROUND.with(|rt| {
            rt.block_on(async {
                let tag = format!("v{n}");
                push_raw(c, url, auth, "team/app", &tag, random_bytes(20_000)).await;
                Ok(())
            })
        })
    });
    let collections = background(|c, url, auth, _| {
        BACKGROUND.with(|rt| {
            rt.block_on(async {
                let r = c
                    .post(format!("{url}/admin/v1/gc"))
                    .header("authorization", auth)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match r.status().as_u16() {
                    202 | 409 => Ok(()),
                    other => Err(format!("POST /admin/v1/gc: {other}")),
                }
            })
        })
    });

    let pull = |i: usize, reference: &str| {
        rt.block_on(pull_raw(
            &c,
            &berth.url(""),
            &auth,
            &format!("docker.io/library/img{i}"),
            reference,
        ))
    };
    let expect = |i: usize, got: (String, Vec<String>)| {
        let (manifest, blobs) = &images[i];
        assert_eq!(&got.0, manifest);
        assert_eq!(
            got.1,
            blobs.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()
        );
    };
    // By digest only: an untagged cache entry, which collections keep.
    expect(0, pull(0, &images[0].0).unwrap());
    let gc_runs = |b: &Berth| {
        metric(
            b,
            &password,
            "berth_gc_runs_total{mode=\"run\",result=\"ok\"}",
        )
    };
    // Older than the grace period: were it pushed and untagged, it would
    // be garbage.
    thread::sleep(GRACE);
    let before = gc_runs(&berth);
    let waited = Instant::now();
    while gc_runs(&berth) < before + 2.0 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no garbage collection ran"
        );
        thread::sleep(Duration::from_millis(100));
    }
    proxy.set(Mode::Status(503));
    expect(
        0,
        pull(0, &images[0].0).expect("collected: a digest-pulled entry is no garbage"),
    );
    proxy.set(Mode::Pass);

    // Filling past the cap: img0, pulled least recently, goes.
    for i in 1..4 {
        expect(i, pull(i, "1").unwrap());
    }
    let layer = |i: usize| images[i].1[1].0.clone();
    wait_evicted(&berth, &password, &layer(0));
    assert!(
        blob_file(&berth, &layer(3)).exists(),
        "the most recent pull was evicted"
    );
    // Evicted means fetched again.
    expect(0, pull(0, &images[0].0).unwrap());
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", layer(0))),
        2,
        "{:?}",
        proxy.log()
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let pushed = pushes
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("a push failed: {e}"));
    let collected = collections
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pushed > 0 && collected > 0,
        "{pushed} pushes, {collected} collections"
    );
}

/// A multi-arch index is cached whole, its children only as clients ask
/// for them.
#[test]
fn an_index_is_cached_with_its_children_fetched_as_asked() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.berth.url(""));
    let (berth, password) = mirror_berth(&docker_io_mirror(
        &proxy.url(),
        &upstream.robot,
        &upstream.secret,
        "",
    ));
    let rt = runtime();
    let c = reqwest::Client::new();
    let up = upstream.berth.url("");
    let children: Vec<(String, Vec<(String, usize)>)> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            rt.block_on(push_raw(
                &c,
                &up,
                &upstream_auth(),
                "library/multi",
                arch,
                random_bytes(5000),
            ))
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children.iter().zip(["amd64", "arm64"]).map(|((digest, _), arch)| json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 400,
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    });
    // Sizes must be the children's own.
    let index = {
        let mut index = index;
        for (i, (digest, _)) in children.iter().enumerate() {
            let (_, _, body) = get_from(
                &up,
                &upstream_auth(),
                &format!("/v2/library/multi/manifests/{digest}"),
            );
            index["manifests"][i]["size"] = json!(body.len());
        }
        serde_json::to_vec(&index).unwrap()
    };
    let status = rt.block_on(async {
        c.put(format!("{up}/v2/library/multi/manifests/latest"))
            .header("authorization", upstream_auth())
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(index.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 201);

    let (status, _, body) = get(
        &berth,
        &password,
        "/v2/docker.io/library/multi/manifests/latest",
    );
    assert_eq!(status, 200);
    assert_eq!(body, index, "the index, byte for byte");
    let fetched_children = || {
        children
            .iter()
            .map(|(digest, _)| proxy.count("GET", &format!("/manifests/{digest}")))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fetched_children(),
        [0, 0],
        "children fetched before anyone asked"
    );
    let (digest, blobs) = rt
        .block_on(pull_raw(
            &c,
            &berth.url(""),
            &basic("admin", &password),
            "docker.io/library/multi",
            &children[1].0,
        ))
        .unwrap();
    assert_eq!(digest, children[1].0);
    assert_eq!(
        blobs,
        children[1]
            .1
            .iter()
            .map(|(d, _)| d.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(fetched_children(), [0, 1], "only the child asked for");
    let manifests = admin_json(
        &berth,
        &password,
        "/admin/v1/repositories/docker.io%2Flibrary%2Fmulti/manifests",
    );
    assert_eq!(manifests.as_array().unwrap().len(), 2, "{manifests}");
}

/// A GET of `base` + `path` with `auth`: status, headers, body.
fn get_from(base: &str, auth: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("authorization", auth)
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
}
