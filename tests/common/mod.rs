//! The test harness every integration test uses: a real `berth` process on
//! a free loopback port with its own temporary data directory.
//!
//! On the suite's PostgreSQL pass (scripts/test.sh exports
//! `BERTH_TEST_POSTGRES`, a URL of a throwaway server), each berth also gets
//! a fresh database of its own there, named in its config file; a berth
//! started again on the same data directory finds the same database.

#![allow(dead_code)]

pub mod fault_proxy;
pub mod kube;
pub mod push;
pub mod receiver;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Berth {
    child: Child,
    /// `127.0.0.1:PORT`, as clients name the registry.
    pub host: String,
    /// `http`, or `https` when serving TLS.
    pub scheme: String,
    data: Data,
    /// Its PostgreSQL database, on the PostgreSQL pass.
    database: Option<String>,
}

/// A data directory: a temporary one of berth's own, or one the test made
/// (a small filesystem) and removes itself.
enum Data {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Data {
    fn path(&self) -> &Path {
        match self {
            Data::Temp(dir) => dir.path(),
            Data::Given(dir) => dir,
        }
    }
}

impl Berth {
    /// Starts berth on a free port with an empty data directory, open to
    /// anonymous callers on loopback (as the tests are).
    pub fn start() -> Berth {
        Berth::start_with_config("")
    }

    /// Starts berth with `config` as its config file (TOML), plus anonymous
    /// access from loopback unless `config` has an `[auth]` table.
    pub fn start_with_config(config: &str) -> Berth {
        if config.contains("[auth]") {
            return Berth::start_secure(config);
        }
        Berth::start_secure(&format!("{config}\n[auth]\nanonymous_loopback = true\n"))
    }

    /// Starts berth with exactly `config` (and, on the PostgreSQL pass, a
    /// fresh database unless `config` names one): credentials needed, as by
    /// default.
    pub fn start_secure(config: &str) -> Berth {
        Berth::start_on(Data::Temp(tempfile::tempdir().expect("temp dir")), config)
    }

    /// Starts berth (open to anonymous callers on loopback) with `config`
    /// and its data in `dir`, a directory the caller made and removes.
    pub fn start_in(dir: &Path, config: &str) -> Berth {
        Berth::start_on(
            Data::Given(dir.to_path_buf()),
            &format!("{config}\n[auth]\nanonymous_loopback = true\n"),
        )
    }

    fn start_on(data: Data, config: &str) -> Berth {
        let database = write_config(&data.path().join("config.toml"), config);
        let (child, scheme, host) = spawn(data.path(), "127.0.0.1:0");
        Berth {
            child,
            host,
            scheme,
            data,
            database,
        }
    }

    /// Stops berth (SIGTERM, as a service manager would) and starts it again
    /// on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _, host) = spawn(self.data.path(), &self.host);
        self.child = child;
        self.host = host;
    }

    /// Kills berth at once (SIGKILL, as a crash or an OOM kill would) and
    /// starts it again on the same port and data directory.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, _, host) = spawn(self.data.path(), &self.host);
        self.child = child;
        self.host = host;
    }

    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// `http://127.0.0.1:PORT` (or https) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The PostgreSQL database this berth keeps its metadata in; None on
    /// SQLite (the file in its data directory).
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The password berth generated for `admin` on its first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data.path().join("initial-admin-password"))
            .expect("initial-admin-password")
            .trim()
            .to_owned()
    }

    /// Runs a `berth` management command (user, robot, grant, ...) on this
    /// instance's data directory; returns its standard output.
    pub fn manage(&self, args: &[&str]) -> String {
        self.manage_with_input(args, "")
    }

    /// Like [`Berth::manage`], with `input` on standard input (for
    /// `--password-stdin`).
    pub fn manage_with_input(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--config")
            .arg(self.data.path().join("config.toml"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("run berth");
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, listen: &str) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(data.join("config.toml"))
        .env("RUST_LOG", "berth=debug")
        .current_dir(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read berth's first line");
    let (scheme, host) = line
        .split_whitespace()
        .find_map(|word| word.split_once("://"))
        .unwrap_or_else(|| panic!("berth did not say where it listens: {line:?}"));
    (child, scheme.to_owned(), host.to_owned())
}

/// The Python with the ORAS client: the venv scripts/install-test-deps.sh
/// makes (`BERTH_ORAS_PYTHON` names another).
pub fn oras_python() -> PathBuf {
    std::env::var_os("BERTH_ORAS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/berth-oras/bin/python"))
}

/// The PostgreSQL server of the suite's PostgreSQL pass
/// (`BERTH_TEST_POSTGRES`, a superuser's URL); None on the SQLite pass.
pub fn postgres_url() -> Option<String> {
    std::env::var("BERTH_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// On the PostgreSQL pass, a new empty database on its server, as the URL
/// to give berth (`[database] url`, or `BERTH_DATABASE_URL`); None on the
/// SQLite pass. Each call makes another: berths meant to share metadata
/// (replicas) are given the same URL.
pub fn fresh_database() -> Option<String> {
    Some(create_database(&postgres_url()?))
}

/// A new empty database on the PostgreSQL server `server` (a superuser's
/// URL), as the URL to give berth.
pub fn create_database(server: &str) -> String {
    let name = format!("berth_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .args(["--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1"])
        .args(["--dbname", server])
        // A file copy of the (small) template is a third of the time of
        // the default WAL-logged copy on a server without fsync.
        .args([
            "--command",
            &format!("CREATE DATABASE {name} STRATEGY FILE_COPY"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql (postgresql-client)");
    assert!(
        out.status.success(),
        "CREATE DATABASE {name} on {server} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    with_database_name(server, &name)
}

/// `url` naming the database `name` instead of its own.
fn with_database_name(url: &str, name: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let authority = url.find("://").map_or(0, |i| i + 3);
    let base = match url[authority..].find('/') {
        Some(slash) => &url[..authority + slash],
        None => url,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Writes `config` as a berth config file at `path`: on the PostgreSQL
/// pass with a `[database]` table naming a fresh database unless `config`
/// has one already. Returns the PostgreSQL database berth will use, if any.
/// Every config file a test writes for a berth to serve from goes through
/// here.
pub fn write_config(path: &Path, config: &str) -> Option<String> {
    // A config that names its own database (replicas sharing one) keeps it.
    let named = toml::from_str::<toml::Table>(config)
        .ok()
        .and_then(|table| table.get("database").cloned());
    if let Some(named) = named {
        std::fs::write(path, config).expect("write config");
        return named
            .get("url")
            .and_then(|url| url.as_str())
            .filter(|url| !url.is_empty())
            .map(str::to_owned);
    }
    let database = fresh_database();
    let text = match &database {
        Some(url) => format!("{config}\n[database]\nurl = {url:?}\n"),
        None => config.to_owned(),
    };
    std::fs::write(path, text).expect("write config");
    database
}

/// The repository's root, for scripts and fixtures.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nothing uses now; whoever binds it next gets it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A response header as text; panics if it is missing.
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts an OCI error answer and returns its body.
pub async fn expect_error(
    r: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(r.status(), status, "{r:?}");
    assert_eq!(header(&r, "content-type"), "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}
