//! The test harness every integration test uses: a real `berth` process on
//! a free loopback port with its own temporary data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Berth {
    child: Child,
    /// `127.0.0.1:PORT`, as clients name the registry.
    pub host: String,
    data: tempfile::TempDir,
}

impl Berth {
    /// Starts berth on a free port with an empty data directory.
    pub fn start() -> Berth {
        Berth::start_with_config("")
    }

    /// Starts berth with `config` as its config file (TOML).
    pub fn start_with_config(config: &str) -> Berth {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::write(data.path().join("config.toml"), config).expect("write config");
        let (child, host) = spawn(data.path(), "127.0.0.1:0");
        Berth { child, host, data }
    }

    /// Stops berth (SIGTERM, as a service manager would) and starts it again
    /// on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let (child, host) = spawn(self.data.path(), &self.host);
        self.child = child;
        self.host = host;
    }

    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.host, path)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, listen: &str) -> (Child, String) {
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
    let host = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("berth did not say where it listens: {line:?}"))
        .to_owned();
    (child, host)
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
