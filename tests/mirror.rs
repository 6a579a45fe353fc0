//! Pull-through mirrors end to end, every part real and on loopback.
//!
//! The upstream is a second berth with token authentication whose realm
//! is on another port (a TCP forwarder, as auth.docker.io is another host
//! than registry-1.docker.io), and Debian's docker-registry (Distribution)
//! behind htpasswd (Basic). Between berth and the upstream berth sits a
//! small HTTP proxy in this test that counts every request (method and
//! path, as an access log would) and, when asked, answers 429 or 503 in
//! the upstream's stead, cuts the connection, or corrupts blob bytes.
//!
//! The clients are the real ones: containerd with a hosts.toml naming
//! berth as the mirror of docker.io (`?ns=docker.io`), podman with a
//! registries.conf mirror, skopeo and docker through the path prefix, and
//! docker's daemon with `registry-mirrors` (unprefixed names).

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
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
}

struct ProxyState {
    target: String,
    mode: Mutex<Mode>,
    log: Mutex<Vec<(String, String)>>,
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

    /// Requests so far, `(method, path)`.
    fn log(&self) -> Vec<(String, String)> {
        self.state.log.lock().unwrap().clone()
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
    state
        .log
        .lock()
        .unwrap()
        .push((method.to_string(), path.clone()));
    let mode = *state.mode.lock().unwrap();
    if let Mode::Status(status) = mode {
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        let body = json!({"errors": [{"code": "TOOMANYREQUESTS", "message": format!("the proxy answers {status}")}]});
        return (status, [("retry-after", "3600")], axum::Json(body)).into_response();
    }
    let mut forwarded = state
        .http
        .request(method, format!("{}{path}", state.target));
    for (name, value) in request.headers() {
        if name != "host" {
            forwarded = forwarded.header(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(request.into_body().into_data_stream());
    let answer = match forwarded.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
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
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .get(berth.url(path))
            .header("authorization", basic("admin", password))
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
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

// Keep otherwise unused helpers of this file in use across the tests.
#[allow(dead_code)]
fn _unused(_: HashMap<(), ()>, _: Instant, _: &mut dyn Read, _: &mut dyn Write, _: PathBuf) {}
