//! A real, node-less Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) on loopback, from `scripts/kube-test-cluster.sh`,
//! stopped when dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Cluster {
    dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    /// API servers the test started again after stopping the first.
    restarted: std::sync::Mutex<Vec<std::process::Child>>,
}

fn script() -> PathBuf {
    super::repo_root().join("scripts/kube-test-cluster.sh")
}

fn run_script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run kube-test-cluster.sh");
    assert!(out.status.success(), "kube-test-cluster.sh {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

impl Cluster {
    /// Builds (or reuses the cached) binaries and starts a cluster.
    pub fn start() -> Cluster {
        run_script(&["build"]);
        // The script picks free ports, then starts etcd and the API server
        // on them; a test starting at the same time may take one first.
        // Such a start fails cleanly, and a fresh one picks new ports.
        let mut attempt = 0;
        let (dir, env_file) = loop {
            attempt += 1;
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().to_str().unwrap().to_owned();
            let out = Command::new("bash")
                .arg(script())
                .args(["start", &path])
                .stderr(Stdio::inherit())
                .output()
                .expect("run kube-test-cluster.sh");
            if out.status.success() {
                break (dir, String::from_utf8(out.stdout).unwrap());
            }
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", &path])
                .status();
            assert!(
                attempt < 3,
                "kube-test-cluster.sh start failed {attempt} times"
            );
        };
        let text = std::fs::read_to_string(env_file.trim()).expect("cluster env file");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_owned(),
                    v.trim().trim_matches(['\'', '"']).to_owned(),
                )
            })
            .collect();
        Cluster {
            dir,
            env,
            restarted: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in the cluster's env file"))
    }

    /// `kubectl` as the cluster admin; panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(self.var("KUBECTL"))
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, yaml: &str) {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml));
    }

    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).unwrap()
    }

    /// Polls `check` on `kubectl get ARGS -o json` until it holds.
    pub fn wait_for(&self, what: &str, args: &[&str], check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.get_json(args);
            if check(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Applies deploy/rbac.yaml and returns a kubeconfig for its service
    /// account: berth acting with exactly the rights it ships with.
    pub fn shipped_deployer_kubeconfig(&self) -> PathBuf {
        let rbac = super::repo_root().join("deploy/rbac.yaml");
        self.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);
        self.service_account_kubeconfig("berth", "berth")
    }

    /// A kubeconfig that authenticates as a service account, with its
    /// token from the secret the token controller made.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(30);
        let secret = loop {
            let sa = self.get_json(&["serviceaccount", name, "-n", namespace]);
            if let Some(s) = sa["secrets"][0]["name"].as_str() {
                break s.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no token secret for {namespace}/{name}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let secret = self.get_json(&["secret", &secret, "-n", namespace]);
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap())
            .unwrap();
        let path = self.dir().join(format!("{namespace}-{name}.kubeconfig"));
        self.write_kubeconfig(&path, std::str::from_utf8(&token).unwrap());
        path
    }

    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        use base64::Engine;
        let ca = std::fs::read(self.var("KUBE_CA")).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let server = self.var("KUBE_APISERVER");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: test\n    user: u\ncurrent-context: c\n"
        );
        std::fs::write(path, config).unwrap();
    }

    /// Kills the API server (as a crash or an outage would) and returns a guard that
    /// starts it again, with the same flags and port, when `resume` is
    /// called.
    pub fn stop_apiserver(&self) -> StoppedApiserver {
        let pids = std::fs::read_to_string(self.dir().join("pids")).unwrap();
        let pid: u32 = pids
            .lines()
            .find_map(|l| l.strip_prefix("kube-apiserver "))
            .expect("kube-apiserver in pids")
            .trim()
            .parse()
            .unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Gone, or a zombie: its parent (the script that started it) is
        // gone and nothing may reap it.
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        };
        while alive(pid) {
            assert!(Instant::now() < deadline, "kube-apiserver did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        StoppedApiserver {
            args,
            dir: self.dir().to_owned(),
        }
    }
}

pub struct StoppedApiserver {
    args: Vec<String>,
    dir: PathBuf,
}

impl StoppedApiserver {
    /// Starts the API server again and waits until it is ready.
    pub fn resume(self, cluster: &Cluster) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let child = Command::new(&self.args[0])
            .args(&self.args[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("restart kube-apiserver");
        // Recorded so that stopping the cluster stops it too.
        let mut pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        pids.push_str(&format!("kube-apiserver {}\n", child.id()));
        std::fs::write(self.dir.join("pids"), pids).unwrap();
        cluster.restarted.lock().unwrap().push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(cluster.var("KUBECTL"))
                .env("KUBECONFIG", cluster.var("KUBECONFIG"))
                .args(["get", "--raw", "/readyz"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not come back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status();
        // Stopped above through the pid file; reap them.
        for mut child in self.restarted.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
