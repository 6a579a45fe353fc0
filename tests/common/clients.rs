//! Helpers for driving the real OCI clients (skopeo, podman, containerd's
//! `ctr`, docker) against berth: running commands with a timeout, private
//! daemons on sockets in short temporary directories stopped by Drop
//! guards, image fixtures from `scripts/make-test-image.py`, and asking berth
//! for a manifest directly.
//!
//! Used by tests/clients.rs and tests/auth_clients.rs as
//! `#[path = "common/clients.rs"] mod clients;`, next to `mod common;`.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Berth};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How long a single client command may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon may take to answer its first request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a finished command did.
pub struct Ran {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The command, its exit status and everything it printed.
    pub fn report(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {COMMAND_TIMEOUT:?}"),
        };
        format!(
            "command: {}\nstatus: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Spawns `cmd`, panicking with an install hint when the program is missing.
pub fn spawn(cmd: &mut Command) -> Child {
    let what = format!("{cmd:?}");
    cmd.spawn().unwrap_or_else(|err| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if err.kind() == std::io::ErrorKind::NotFound {
            panic!(
                "`{program}` is not installed or not on PATH \
                 (run scripts/install-test-deps.sh): {err}\ncommand: {what}"
            )
        }
        panic!("could not start {what}: {err}")
    })
}

/// Runs `cmd` to completion (or until COMMAND_TIMEOUT) and captures its output.
pub fn run(cmd: &mut Command) -> Ran {
    run_with_input(cmd, None)
}

/// Like [`run`], writing `input` (when given) to the command's standard input
/// and then closing it, as `--password-stdin` options expect.
pub fn run_with_input(cmd: &mut Command, input: Option<&str>) -> Ran {
    let what = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = spawn(cmd);
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        // A command that exits without reading must not block the test.
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let (tx, rx) = mpsc::channel();
    for (index, mut pipe) in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
        });
    }
    drop(tx);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait for command") {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    // A grandchild could keep a pipe open; do not wait for it forever.
    while let Ok((index, text)) = rx.recv_timeout(Duration::from_secs(10)) {
        if index == 0 {
            stdout = text;
        } else {
            stderr = text;
        }
    }
    Ran {
        what,
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd`, panics (with its output) unless it succeeds, returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let ran = run(cmd);
    assert!(ran.success(), "command failed\n{}", ran.report());
    ran.stdout
}

/// A short directory under /tmp: unix socket paths must stay under 108 bytes.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .expect("temp dir in /tmp")
}

// ---------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------

/// A daemon this test started, in its own process group, logging to a file.
/// Dropping it sends SIGTERM and waits; if it does not exit in time its whole
/// process group (the daemon and whatever it started) is killed.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(name: &'static str, cmd: &mut Command, log: PathBuf) -> Daemon {
        let file = File::create(&log).expect("create daemon log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .process_group(0);
        let child = spawn(cmd);
        Daemon { name, child, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }

    /// Polls `probe` until it succeeds; panics with the daemon's log if the
    /// daemon exits or does not become ready within READY_TIMEOUT.
    pub fn wait_ready(&mut self, mut probe: impl FnMut() -> Ran) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for daemon") {
                panic!(
                    "{} exited before it became ready ({status})\n--- log {} ---\n{}",
                    self.name,
                    self.log.display(),
                    self.log()
                );
            }
            let ran = probe();
            if ran.success() {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "{} not ready after {READY_TIMEOUT:?}\nlast probe:\n{}\n--- log {} ---\n{}",
                    self.name,
                    ran.report(),
                    self.log.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}; killing its process group",
            self.name
        );
        let group = format!("-{pid}");
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Directories outside the test's own temp dir that a daemon insists on
/// creating (dockerd's /run/docker/plugins). Those that did not exist when the
/// guard was made are removed again on drop, if they are empty.
pub struct RemoveIfCreated(Vec<PathBuf>);

impl RemoveIfCreated {
    /// `paths` deepest first.
    pub fn new(paths: &[&str]) -> RemoveIfCreated {
        RemoveIfCreated(
            paths
                .iter()
                .map(PathBuf::from)
                .filter(|path| !path.exists())
                .collect(),
        )
    }
}

impl Drop for RemoveIfCreated {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_dir(path);
        }
    }
}

// ---------------------------------------------------------------------------
// Image fixtures
// ---------------------------------------------------------------------------

/// An image written by scripts/make-test-image.py.
pub struct Image {
    /// The OCI layout directory (`oci:<layout>:<tag>`).
    pub layout: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    pub docker_archive: PathBuf,
}

impl Image {
    /// A fresh random image with `layers` layers of `layer_size` random bytes,
    /// plus a docker-archive of it that loads as `test/<name>:<tag>`.
    pub fn generate(work: &Path, name: &str, tag: &str, layers: usize, layer_size: usize) -> Image {
        let layout = work.join(name);
        let docker_archive = work.join(format!("{name}-docker.tar"));
        let reference = format!("test/{name}:{tag}");
        let script = common::repo_root().join("scripts/make-test-image.py");
        let stdout = ok(Command::new("python3")
            .arg(&script)
            .arg(&layout)
            .args(["--layers", &layers.to_string()])
            .args(["--layer-size", &layer_size.to_string()])
            .args(["--tag", tag, "--ref", &reference])
            .arg("--docker-archive")
            .arg(&docker_archive));
        let summary: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("generator summary is not JSON ({err}): {stdout}"));
        let string = |value: &Value| value.as_str().expect("string in summary").to_owned();
        let image = Image {
            layout,
            tag: tag.to_owned(),
            manifest_digest: string(&summary["manifest_digest"]),
            config_digest: string(&summary["config_digest"]),
            layers: summary["layers"]
                .as_array()
                .expect("layers in summary")
                .iter()
                .map(|layer| string(&layer["digest"]))
                .collect(),
            docker_archive,
        };
        assert_eq!(image.layers.len(), layers, "summary: {stdout}");
        image
    }

    /// `oci:<layout>:<tag>` for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// Every blob of the image: manifest, config, layers.
    pub fn blobs(&self) -> Vec<&str> {
        let mut blobs = vec![self.manifest_digest.as_str(), self.config_digest.as_str()];
        blobs.extend(self.layers.iter().map(String::as_str));
        blobs
    }
}

/// `<layout>/blobs/sha256/<hex>` of `digest`.
pub fn layout_blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(hex_of(digest))
}

pub fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

// ---------------------------------------------------------------------------
// Asking berth directly
// ---------------------------------------------------------------------------

/// A manifest as berth serves it.
pub struct Served {
    pub digest: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type;
/// asserts 200 and that Docker-Content-Digest is the digest of the body.
pub fn served_manifest(berth: &Berth, repo: &str, reference: &str) -> Served {
    served_manifest_as(berth, repo, reference, None)
}

/// Like [`served_manifest`], sending `authorization` (a whole
/// `Authorization` header value such as `Basic dXNlcjpwdw==`) when given.
pub fn served_manifest_as(
    berth: &Berth,
    repo: &str,
    reference: &str,
    authorization: Option<&str>,
) -> Served {
    let url = berth.url(&format!("/v2/{repo}/manifests/{reference}"));
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (status, headers, body) = runtime.block_on(async {
        let mut request = reqwest::Client::new().get(&url).header("Accept", accept);
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("manifest body").to_vec();
        (status, headers, body)
    });
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_owned())
    };
    assert_eq!(
        status.as_u16(),
        200,
        "GET {url}: {headers:?}\n{}",
        String::from_utf8_lossy(&body)
    );
    let digest = header("docker-content-digest")
        .unwrap_or_else(|| panic!("GET {url}: no Docker-Content-Digest in {headers:?}"));
    assert_eq!(
        digest,
        common::sha256(&body),
        "GET {url}: Docker-Content-Digest is not the digest of the body"
    );
    Served {
        digest,
        content_type: header("content-type").unwrap_or_default(),
        body,
    }
}

/// The `mediaType` of a manifest.
pub fn media_type(manifest: &[u8]) -> String {
    let value: Value = serde_json::from_slice(manifest).expect("manifest is JSON");
    value["mediaType"].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

/// podman with all of its state, credentials from `podman login` included,
/// under `dir`.
pub struct Podman {
    pub dir: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Podman {
        let conf = format!(
            "[engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{dir}/events.log\"\n\
             tmp_dir = \"{dir}/tmp\"\n\
             image_copy_tmp_dir = \"{dir}/tmp\"\n\
             [network]\n\
             network_config_dir = \"{dir}/net\"\n",
            dir = dir.display()
        );
        for sub in ["tmp", "net"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("containers.conf"), conf).unwrap();
        // podman refuses to run with a REGISTRY_AUTH_FILE that does not exist.
        fs::write(dir.join("auth.json"), "{\"auths\": {}}\n").unwrap();
        Podman {
            dir: dir.to_owned(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    }
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

/// A private containerd and a `ctr` talking to it.
pub struct Containerd {
    pub socket: PathBuf,
    pub daemon: Daemon,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        let socket = dir.join("c.sock");
        let config = format!(
            "version = 2\n\
             root = \"{dir}/root\"\n\
             state = \"{dir}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{dir}/opt\"\n",
            dir = dir.display(),
            sock = socket.display()
        );
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long: {}",
            socket.display()
        );
        fs::create_dir_all(dir).unwrap();
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let daemon = Daemon::start(
            "containerd",
            Command::new("containerd").arg("--config").arg(&config_path),
            dir.join("containerd.log"),
        );
        let mut containerd = Containerd { socket, daemon };
        let socket = containerd.socket.clone();
        containerd.daemon.wait_ready(|| {
            run(Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .arg("version"))
        });
        containerd
    }

    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(args);
        cmd
    }

    /// The row of `ctr images <listing>` for `reference`, split on whitespace.
    pub fn image_row(&self, listing: &str, reference: &str) -> Vec<String> {
        let out = ok(&mut self.ctr(&["images", listing]));
        out.lines()
            .map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|row| row.first().map(String::as_str) == Some(reference))
            .unwrap_or_else(|| panic!("`ctr images {listing}` does not list {reference}:\n{out}"))
    }

    /// Pulls `reference` over plain HTTP and checks that containerd lists it
    /// with the digest berth serves, holds every blob and unpacked it.
    pub fn pull_and_check(&self, reference: &str, served: &Served, image: &Image) {
        ok(&mut self.ctr(&["images", "pull", "--plain-http", reference]));

        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        let row = self.image_row("ls", reference);
        assert_eq!(
            row.get(1),
            Some(&served.content_type),
            "ctr images ls: {row:?}"
        );
        assert_eq!(row.get(2), Some(&served.digest), "ctr images ls: {row:?}");

        // REF TYPE DIGEST STATUS SIZE UNPACKED, STATUS being "complete (N/N)"
        let row = self.image_row("check", reference);
        let line = row.join(" ");
        assert!(line.contains(" complete ("), "ctr images check: {line}");
        assert_eq!(
            row.last().map(String::as_str),
            Some("true"),
            "not unpacked: {line}"
        );

        let content = ok(&mut self.ctr(&["content", "ls", "-q"]));
        let manifest: Value = serde_json::from_slice(&served.body).unwrap();
        let config = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        for digest in image
            .layers
            .iter()
            .map(String::as_str)
            .chain([config, served.digest.as_str()])
        {
            assert!(
                content.lines().any(|line| line.trim() == digest),
                "content store lacks {digest}:\n{content}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// docker
// ---------------------------------------------------------------------------

/// A private dockerd (with the containerd it starts itself) and a `docker`
/// CLI talking to it.
pub struct Docker {
    pub dir: PathBuf,
    pub daemon: Daemon,
    /// Dropped after the daemon stops: dockerd leaves its network
    /// namespace mounted, which would keep the test's temp dir alive.
    _netns: Unmount,
}

/// Unmounts a path (if mounted) when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let path = self.0.to_string_lossy();
        if mounts
            .lines()
            .any(|line| line.split(' ').nth(1) == Some(&path))
        {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
}

impl Docker {
    pub fn start(dir: &Path) -> Docker {
        Docker::start_with(dir, serde_json::json!({}))
    }

    /// A dockerd whose daemon.json also has the keys of `settings` (such
    /// as `registry-mirrors`).
    pub fn start_with(dir: &Path, settings: Value) -> Docker {
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("daemon.json");
        let mut daemon_json = serde_json::json!({ "deprecated-key-path": dir.join("key.json") });
        if let (Some(all), Some(extra)) = (daemon_json.as_object_mut(), settings.as_object()) {
            all.extend(extra.clone());
        }
        fs::write(&config, daemon_json.to_string()).unwrap();
        let socket = dir.join("d.sock");
        let daemon = Daemon::start(
            "dockerd",
            Command::new("dockerd")
                .arg("--config-file")
                .arg(&config)
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("x"))
                .arg("-H")
                .arg(format!("unix://{}", socket.display()))
                .arg("--pidfile")
                .arg(dir.join("d.pid"))
                .args([
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=vfs",
                ]),
            dir.join("dockerd.log"),
        );
        let mut docker = Docker {
            dir: dir.to_owned(),
            daemon,
            _netns: Unmount(dir.join("x/netns/default")),
        };
        let probe_dir = docker.dir.clone();
        docker
            .daemon
            .wait_ready(|| run(&mut docker_cli(&probe_dir, &["version"])));
        docker
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        docker_cli(&self.dir, args)
    }

    pub fn inspect(&self, reference: &str, format: &str) -> String {
        ok(&mut self.cmd(&["image", "inspect", "--format", format, reference]))
            .trim()
            .to_owned()
    }
}

pub fn docker_cli(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env(
        "DOCKER_HOST",
        format!("unix://{}", dir.join("d.sock").display()),
    )
    .env("DOCKER_CONFIG", dir.join("cli"))
    .args(args);
    cmd
}

/// The digest in `docker push` output (`<tag>: digest: sha256:... size: N`).
pub fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .skip_while(|word| *word != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{output}"))
        .to_owned()
}
