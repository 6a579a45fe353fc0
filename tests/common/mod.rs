//! The test harness every integration test uses: a real `berth` process on
//! a free loopback port with its own temporary data directory.

#![allow(dead_code)]

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
    data: tempfile::TempDir,
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

    /// Starts berth with exactly `config`: credentials needed, as by default.
    pub fn start_secure(config: &str) -> Berth {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::write(data.path().join("config.toml"), config).expect("write config");
        let (child, scheme, host) = spawn(data.path(), "127.0.0.1:0");
        Berth {
            child,
            host,
            scheme,
            data,
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

/// The repository's root, for scripts and fixtures.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
