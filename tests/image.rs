//! berth's container image, built from the repository's Dockerfile by a
//! real Docker engine and used as people use it: run from a named volume as
//! its non-root user, healthy by its own HEALTHCHECK, logged in to with the
//! password it created, pushed to (its own image), pulled from by
//! containerd, and replaced by a new container that finds the data again.
//!
//! No registry on the internet is reachable, so the Dockerfile's default
//! base image is made here (debootstrap from the machine's Debian mirror,
//! `docker import`ed under that name), and the binary comes from the one
//! cargo built for the tests, through the Dockerfile's BINARY_FROM argument:
//! the runtime stage is built exactly as written, the compile stage is not.

#[path = "common/clients.rs"]
mod clients;
mod common;
#[path = "common/dockerfile.rs"]
mod dockerfile;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clients::{Containerd, Docker, ok, pushed_digest, run, run_with_input};

const VARIANT: &str = "minbase";
const BINARY_IMAGE: &str = "berth-binary:test";
const IMAGE: &str = "berth:test";
const VOLUME: &str = "berth-data";
/// Where the image keeps its data (the Dockerfile's VOLUME).
const DATA: &str = "/var/lib/berth";

#[test]
fn the_image_runs_as_a_registry_and_keeps_its_data_in_the_volume() {
    let work = clients::short_tempdir();
    let docker = Docker::start(&work.path().join("d"));
    let builder = BuildkitDocker::find(&docker);

    let base = dockerfile::arg("BASE_IMAGE");
    import_debian_base(&docker, &base);
    build_binary_image(&builder, &work.path().join("bin"));
    // RUN steps on the host's network: the test's dockerd has no bridge.
    ok(builder
        .cmd(&["build", "--quiet", "--network", "host"])
        .args(["--build-arg", &format!("BINARY_FROM={BINARY_IMAGE}")])
        .args(["--tag", IMAGE])
        .arg(common::repo_root()));
    assert_eq!(docker.inspect(IMAGE, "{{.Config.User}}"), "berth");

    let port = common::free_port();
    let host = format!("127.0.0.1:{port}");
    ok(&mut docker.cmd(&["volume", "create", VOLUME]));
    let database = common::fresh_database();
    let container = Container::run(&docker, &host, database.as_deref());
    container.wait_healthy();
    assert_eq!(get(&format!("http://{host}/readyz"), None).0, 200);

    let uid = process_uid(&docker, container.name);
    assert_ne!(uid, 0, "berth runs as root in the container");
    let berth_uid = ok(&mut docker.cmd(&["exec", container.name, "id", "-u", "berth"]));
    assert_eq!(
        uid.to_string(),
        berth_uid.trim(),
        "not the image's berth user"
    );
    assert_eq!(berth_uid.trim(), dockerfile::arg("BERTH_UID"));

    let password = ok(&mut docker.cmd(&[
        "exec",
        container.name,
        "cat",
        &format!("{DATA}/initial-admin-password"),
    ]))
    .trim()
    .to_owned();
    let logs = run(&mut docker.cmd(&["logs", container.name]));
    assert!(
        logs.stderr.contains(&password),
        "berth did not print the admin password it created:\n{}",
        logs.report()
    );

    // berth's own image, pushed into the containerised berth.
    let reference = format!("{host}/berth/berth:test");
    let login = run_with_input(
        &mut docker.cmd(&["login", "--username", "admin", "--password-stdin", &host]),
        Some(&password),
    );
    assert!(login.success(), "docker login\n{}", login.report());
    ok(&mut docker.cmd(&["tag", IMAGE, &reference]));
    let digest = pushed_digest(&ok(&mut docker.cmd(&["push", &reference])));

    let containerd = Containerd::start(&work.path().join("c"));
    ok(&mut containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &format!("admin:{password}"),
        &reference,
    ]));
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let row = containerd.image_row("ls", &reference);
    assert_eq!(row.get(2), Some(&digest), "ctr images ls: {row:?}");
    let check = containerd.image_row("check", &reference).join(" ");
    assert!(check.contains(" complete ("), "ctr images check: {check}");

    // A new container (an upgrade, say) on the same volume serves what was
    // pushed, to the same password: nothing lived in the old container.
    container.remove();
    let container = Container::run(&docker, &host, database.as_deref());
    container.wait_healthy();
    let basic = format!("admin:{password}");
    let (status, served) = get(
        &format!("http://{host}/v2/berth/berth/manifests/test"),
        Some(&basic),
    );
    assert_eq!(
        status, 200,
        "the pushed image is gone after a new container"
    );
    assert_eq!(served.as_deref(), Some(digest.as_str()));
    container.remove();
}

/// dockerd leaves its network namespace mounted under its exec root when it
/// exits; while it is, the test's temporary directory (gigabytes of image
/// layers) cannot be removed.
/// `docker` with BuildKit, which skips the Dockerfile's compile stage when
/// BINARY_FROM names another: a CLI with the buildx plugin, or one from
/// before Docker 23 (Debian's docker.io), which has BuildKit built in.
struct BuildkitDocker {
    program: PathBuf,
    dir: PathBuf,
}

impl BuildkitDocker {
    fn find(docker: &Docker) -> BuildkitDocker {
        let candidates = ["docker", "/usr/bin/docker"];
        for program in candidates {
            let candidate = BuildkitDocker {
                program: program.into(),
                dir: docker.dir.clone(),
            };
            if run(&mut candidate.cmd(&["buildx", "version"])).success() {
                return candidate;
            }
            let version = run(&mut candidate.cmd(&["version", "--format", "{{.Client.Version}}"]));
            let major = version.stdout.trim().split('.').next().unwrap_or("");
            if version.success() && major.parse::<u32>().is_ok_and(|major| major < 23) {
                return candidate;
            }
        }
        panic!(
            "none of {candidates:?} builds with BuildKit; \
             install docker.io or the buildx plugin (scripts/install-test-deps.sh)"
        );
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.env("DOCKER_BUILDKIT", "1")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("d.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .args(args);
        cmd
    }
}

/// A container of the image, as the README runs it: its data in the named
/// volume, on the host's network (the test's dockerd has no bridge).
struct Container<'a> {
    docker: &'a Docker,
    name: &'static str,
}

impl<'a> Container<'a> {
    fn run(docker: &'a Docker, listen: &str, database: Option<&str>) -> Container<'a> {
        let name = "berth";
        let mut run = docker.cmd(&[
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            // As deploy/berth.yaml runs it: nothing but the volume and /tmp
            // is writable.
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--env",
            &format!("BERTH_LISTEN={listen}"),
            "--volume",
            &format!("{VOLUME}:{DATA}"),
        ]);
        // On the PostgreSQL pass, a database on the host's server (the
        // container shares the host's network).
        if let Some(url) = database {
            run.args(["--env", &format!("BERTH_DATABASE_URL={url}")]);
        }
        ok(run.arg(IMAGE));
        Container { docker, name }
    }

    /// Waits for the image's own HEALTHCHECK to call the container healthy.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let state = ok(&mut self.docker.cmd(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Health.Status}}",
                self.name,
            ]));
            match state.trim() {
                "running healthy" => return,
                "running starting" if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                other => {
                    let logs = run(&mut self.docker.cmd(&["logs", self.name]));
                    let health = run(&mut self.docker.cmd(&[
                        "inspect",
                        "--format",
                        "{{json .State.Health}}",
                        self.name,
                    ]));
                    panic!(
                        "container is {other:?}, not healthy\n{}\n{}",
                        health.stdout,
                        logs.report()
                    );
                }
            }
        }
    }

    fn remove(&self) {
        ok(&mut self.docker.cmd(&["rm", "--force", self.name]));
    }
}

/// Makes `image` (`debian:<suite>-...`) in the test's dockerd from a
/// debootstrapped root file system, cached under /var/tmp by suite and
/// variant because it takes about a minute to make.
fn import_debian_base(docker: &Docker, image: &str) {
    let suite = image
        .strip_prefix("debian:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| panic!("the Dockerfile's base {image} is not debian:<suite>..."));
    let cache = PathBuf::from("/var/tmp/berth-debootstrap").join(format!("{suite}-{VARIANT}.tar"));
    if !cache.exists() {
        fs::create_dir_all(cache.parent().unwrap()).unwrap();
        // Beside the cache, so that the finished tarball is renamed into
        // place whole and a run killed half-way leaves no cache behind.
        let scratch = tempfile::tempdir_in(cache.parent().unwrap()).unwrap();
        let rootfs = scratch.path().join("rootfs");
        ok(Command::new("debootstrap")
            .arg(format!("--variant={VARIANT}"))
            .arg(suite)
            .arg(&rootfs)
            .arg(debian_mirror(suite)));
        let tarball = scratch.path().join("rootfs.tar");
        ok(Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."));
        fs::rename(&tarball, &cache).unwrap();
    }
    ok(docker.cmd(&["import"]).arg(&cache).arg(image));
}

/// The machine's Debian mirror for `suite`, from apt's sources (deb822
/// `.sources` files or one-line `sources.list` entries).
fn debian_mirror(suite: &str) -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let is_main_archive = |uri: &str| uri.trim_end_matches('/').ends_with("/debian");
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                        .map(|value| value.split_whitespace().collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                if field("Types").contains(&"deb")
                    && field("Suites").contains(&suite)
                    && let Some(uri) = field("URIs").into_iter().find(|u| is_main_archive(u))
                {
                    return uri.to_owned();
                }
            }
        } else if name.ends_with(".list") {
            for line in text.lines() {
                // deb [options] URI SUITE COMPONENTS...
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|word| !word.starts_with('[') && !word.ends_with(']'))
                    .collect();
                if words.first() == Some(&"deb")
                    && words.get(2) == Some(&suite)
                    && words.get(1).is_some_and(|uri| is_main_archive(uri))
                {
                    return words[1].to_owned();
                }
            }
        }
    }
    panic!("no Debian mirror for {suite} in apt's sources");
}

/// A scratch image holding the test's berth binary at /berth, for the
/// Dockerfile's BINARY_FROM.
fn build_binary_image(builder: &BuildkitDocker, context: &Path) {
    fs::create_dir_all(context).unwrap();
    // Without its debug information: a tenth of the size, so pushing the
    // image below stays quick. The code is the same.
    ok(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_berth"))
        .arg(context.join("berth")));
    fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY berth /berth\n",
    )
    .unwrap();
    ok(builder
        .cmd(&["build", "--quiet", "--tag", BINARY_IMAGE])
        .arg(context));
}

/// The user id the container's main process runs as, seen from the host.
fn process_uid(docker: &Docker, container: &str) -> u32 {
    let pid = ok(&mut docker.cmd(&["inspect", "--format", "{{.State.Pid}}", container]));
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    // Uid: real effective saved filesystem
    let uids: Vec<u32> = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("Uid in /proc/PID/status")
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(
        uids.iter().all(|id| *id == uids[0]),
        "uids differ: {uids:?}"
    );
    uids[0]
}

/// GET `url` (with `user:password` basic auth when given); the status and
/// the Docker-Content-Digest header.
fn get(url: &str, basic: Option<&str>) -> (u16, Option<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new().get(url).header(
            "Accept",
            [clients::OCI_MANIFEST, clients::DOCKER_MANIFEST].join(", "),
        );
        if let Some((user, password)) = basic.and_then(|b| b.split_once(':')) {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        let digest = response
            .headers()
            .get("docker-content-digest")
            .map(|value| value.to_str().unwrap().to_owned());
        (response.status().as_u16(), digest)
    })
}
