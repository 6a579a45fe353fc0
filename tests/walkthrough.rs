//! The README's walkthrough, run as written, so that it cannot drift from
//! what berth does: its shell blocks run in order, as a newcomer would
//! type them, in a copy of the checkout's examples/calculator and deploy/,
//! against a private dockerd and a real Kubernetes API server. The first
//! terminal is one shell, so `cd` and `export` carry from block to block;
//! a block marked `<!-- second terminal -->` runs in the background in a
//! shell of its own. After each block the test checks what the user would
//! see: the Deployment on the pushed digest after each push and on the
//! previous one after the rollback, the rollouts complete, `berth deploys`
//! recording them, the calculator answering.
//!
//! The test cluster has no nodes; tests/common/nodes.rs simulates one, so
//! that pods start and rollouts complete.

#[path = "common/clients.rs"]
mod clients;
mod common;
#[path = "common/nodes.rs"]
mod nodes;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clients::{Docker, pushed_digest, short_tempdir};
use common::kube::Cluster;
use common::{free_port, repo_root};
use nodes::SimulatedNode;
use serde_json::Value;

/// How long one block may run: building and pushing an image on a busy
/// machine is the slowest.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long berth may take to roll out and record what it did.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
const SECOND_TERMINAL: &str = "<!-- second terminal -->";

/// A fenced block of the walkthrough.
struct Block {
    language: String,
    text: String,
    second_terminal: bool,
}

/// The fenced blocks between `<!-- walkthrough -->` and
/// `<!-- /walkthrough -->`. A block is second-terminal when the marker is
/// the line just before its opening fence.
fn walkthrough_blocks(readme: &str) -> Vec<Block> {
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("README.md has no <!-- walkthrough --> marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("README.md has no <!-- /walkthrough --> marker");
    let mut lines = readme[start..end].lines();
    let mut blocks = Vec::new();
    let mut previous = "";
    while let Some(line) = lines.next() {
        if let Some(language) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push(Block {
                language: language.trim().to_owned(),
                text: body.join("\n") + "\n",
                second_terminal: previous.trim() == SECOND_TERMINAL,
            });
            previous = "";
        } else {
            previous = line;
        }
    }
    blocks
}

/// The lines of a TOML text that are settings, not comments or spacing.
fn settings(toml: &str) -> Vec<&str> {
    toml.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The first terminal: one `bash -euo pipefail` reading the blocks, so a
/// failing command ends the walkthrough as it would stop a careful reader.
struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    scripts: PathBuf,
    blocks_run: usize,
}

impl Terminal {
    fn open(cwd: &Path, env: &[(String, String)], scripts: &Path) -> Terminal {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        let mut child = clients::spawn(
            Command::new("bash")
                .args(["--noprofile", "--norc", "-euo", "pipefail"])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(cwd)
                .stdin(Stdio::piped())
                .stdout(writer.try_clone().expect("a pipe"))
                .stderr(writer),
        );
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        fs::create_dir_all(scripts).unwrap();
        Terminal {
            child,
            stdin,
            lines,
            scripts: scripts.to_owned(),
            blocks_run: 0,
        }
    }

    /// Runs a block as if typed in, and returns what it printed.
    fn run(&mut self, text: &str) -> String {
        self.blocks_run += 1;
        let script = self.scripts.join(format!("block-{}.sh", self.blocks_run));
        fs::write(&script, text).unwrap();
        let done = format!("-- block {} done --", self.blocks_run);
        // Sourced with stdin from /dev/null so that no command can read
        // the blocks that follow; the leading newline ends any last line
        // printed without one.
        let stdin = self.stdin.as_mut().expect("the terminal is open");
        write!(
            stdin,
            "source {} < /dev/null\nprintf '\\n%s\\n' '{done}'\n",
            script.display()
        )
        .expect("type into the terminal");
        stdin.flush().unwrap();
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == done => return output,
                Ok(line) => {
                    eprintln!("  | {line}");
                    output.push_str(&line);
                    output.push('\n');
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait for bash");
                    panic!("the walkthrough failed ({status}) in:\n{text}\noutput:\n{output}");
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("still running after {BLOCK_TIMEOUT:?}:\n{text}\noutput:\n{output}")
                }
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // End of input: the shell exits, as a closed terminal does.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A block left running in the second terminal, logging to a file. Closing
/// the terminal stops its whole process group (the shell and `berth`).
struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(text: &str, cwd: &Path, env: &[(String, String)], log: PathBuf) -> Background {
        use std::os::unix::process::CommandExt;
        let file = fs::File::create(&log).unwrap();
        let child = clients::spawn(
            Command::new("bash")
                .args(["--noprofile", "--norc", "-euo", "pipefail", "-c", text])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(cwd)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .process_group(0),
        );
        Background { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `line`; panics if the block ends first.
    fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(line) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the second terminal ended ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} in the second terminal after a minute:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever ignored SIGTERM; usually nothing is left.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Copies a directory tree, leaving out entries named in `skip` (build
/// output and state of an earlier run in the checkout).
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, skip);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn deployment_image(cluster: &Cluster) -> String {
    let deployment = cluster.get_json(&["deployment", "calculator"]);
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The image `docker push` output names: `<repository>@<digest>`.
fn pushed_image(output: &str) -> String {
    let repository = output
        .split("The push refers to repository [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no repository in the docker push output:\n{output}"));
    format!("{repository}@{}", pushed_digest(output))
}

#[test]
fn the_readme_walkthrough_builds_pushes_deploys_and_rolls_back() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = walkthrough_blocks(&readme);
    let example = repo_root().join("examples/calculator");

    // The configuration the README shows is the one berth runs with.
    let shown = blocks
        .iter()
        .find(|b| b.language == "toml")
        .expect("the walkthrough shows berth's config.toml");
    let config = fs::read_to_string(example.join("config.toml")).unwrap();
    assert_eq!(
        settings(&shown.text),
        settings(&config),
        "README.md and examples/calculator/config.toml differ"
    );

    let cluster = Cluster::start();
    let _node = SimulatedNode::start(Path::new(cluster.var("KUBECONFIG")), "node-1");
    let docker_dir = short_tempdir();
    let docker = Docker::start(docker_dir.path());

    // A checkout as a newcomer has it, and a home of their own.
    let scratch = tempfile::tempdir().unwrap();
    let checkout = scratch.path().join("berth");
    copy_tree(
        &example,
        &checkout.join("examples/calculator"),
        &["target", "data", "berth.kubeconfig"],
    );
    copy_tree(&repo_root().join("deploy"), &checkout.join("deploy"), &[]);
    let home = scratch.path().join("home");
    fs::create_dir_all(&home).unwrap();

    // Free ports in place of 8888 and 8080, set as the README says.
    let registry = format!("127.0.0.1:{}", free_port());
    let port = free_port().to_string();
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let kubectl = PathBuf::from(cluster.var("KUBECTL"));
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            format!(
                "{}:{}:{}",
                berth.parent().unwrap().display(),
                kubectl.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        ("HOME".into(), home.display().to_string()),
        ("KUBECONFIG".into(), cluster.var("KUBECONFIG").into()),
        (
            "DOCKER_HOST".into(),
            format!("unix://{}", docker.dir.join("d.sock").display()),
        ),
        ("REGISTRY".into(), registry.clone()),
        ("PORT".into(), port.clone()),
        ("BERTH_LISTEN".into(), registry.clone()),
    ];
    // The toolchain the newcomer installed, found as from their own home.
    let real_home = std::env::var("HOME").unwrap_or_default();
    for (name, default) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
        let value = std::env::var(name).unwrap_or_else(|_| format!("{real_home}/{default}"));
        env.push((name.into(), value));
    }
    if let Ok(tmp) = std::env::var("TMPDIR") {
        env.push(("TMPDIR".into(), tmp));
    }
    // On the PostgreSQL pass, berth's database, named the way a newcomer
    // would without editing the example's config.
    if let Some(url) = common::fresh_database() {
        env.push(("BERTH_DATABASE_URL".into(), url));
    }

    let mut terminal = Terminal::open(&checkout, &env, &scratch.path().join("typed"));
    let mut second: Vec<Background> = Vec::new();
    let berth_dir = checkout.join("examples/calculator");
    let deploys = || -> Vec<Value> {
        let out = clients::ok(
            Command::new(&berth)
                .args(["deploys", "--json", "--limit", "100"])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(&berth_dir),
        );
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    let mut pushed: Vec<String> = Vec::new();
    let mut expected_image = None;
    let mut rolled_back = false;
    let mut answered = false;
    for block in blocks.iter().filter(|b| b.language == "sh") {
        eprintln!("$ {}", block.text.trim_end().replace('\n', "\n$ "));
        if block.second_terminal {
            let log = scratch
                .path()
                .join(format!("terminal-{}.log", second.len() + 2));
            let mut started = Background::start(&block.text, &checkout, &env, log);
            assert!(
                block.text.contains("berth serve"),
                "the test knows of no other second-terminal block:\n{}",
                block.text
            );
            started.wait_for_line("berth listening on");
            second.push(started);
            continue;
        }
        let out = terminal.run(&block.text);
        let text = &block.text;

        if text.contains("docker push") {
            // berth rolls the Deployment onto the digest it stored, then
            // records the rollout as succeeded once the pods are ready.
            let image = pushed_image(&out);
            let deadline = Instant::now() + SETTLE_TIMEOUT;
            while deployment_image(&cluster) != image {
                assert!(
                    Instant::now() < deadline,
                    "the Deployment is not on {image}: {}\n{:#?}",
                    deployment_image(&cluster),
                    deploys()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            while !deploys()
                .iter()
                .any(|d| d["new_image"] == image.as_str() && d["state"] == "succeeded")
            {
                assert!(
                    Instant::now() < deadline,
                    "no succeeded rollout of {image}:\n{:#?}",
                    deploys()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            pushed.push(image.clone());
            expected_image = Some(image);
        }
        if text.contains("berth rollback") {
            let previous = pushed
                .iter()
                .rev()
                .nth(1)
                .expect("a rollback after two pushes")
                .clone();
            assert!(
                out.contains(&format!("rolled back by hand to {previous}")),
                "{out}"
            );
            assert_eq!(deployment_image(&cluster), previous);
            rolled_back = true;
            expected_image = Some(previous);
        }
        if text.contains("kubectl rollout status") {
            assert!(out.contains("successfully rolled out"), "{out}");
        }
        if text.contains("kubectl get deployment") {
            let image = expected_image.as_deref().expect("something pushed");
            assert!(out.lines().any(|l| l == image), "not {image}:\n{out}");
        }
        if text.contains("berth deploys") {
            let image = expected_image.as_deref().expect("something pushed");
            assert!(
                out.lines()
                    .any(|l| l.contains("succeeded") && l.contains(image)),
                "no succeeded rollout of {image}:\n{out}"
            );
        }
        if text.contains("docker run") {
            // A person looks at the container before curling it; the
            // test waits for it to listen.
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the calculator does not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if text.contains("curl") {
            let lines: Vec<&str> = out.lines().collect();
            assert!(lines.contains(&"3"), "1 + 2 is not 3:\n{out}");
            assert!(
                lines.contains(&"calculator 1.0.0"),
                "no version answered:\n{out}"
            );
            answered = true;
        }
    }

    assert_eq!(pushed.len(), 2, "two versions pushed: {pushed:?}");
    assert_ne!(pushed[0], pushed[1], "1.1.0 is a new image");
    assert!(rolled_back, "the walkthrough rolls back");
    assert!(answered, "the walkthrough asks the calculator");
    assert_eq!(deployment_image(&cluster), pushed[0]);

    // berth deploys: the rollout of each push, then the rollback.
    let records = deploys();
    for (tag, image) in ["1.0.0", "1.1.0"].iter().zip(&pushed) {
        assert!(
            records.iter().any(|d| d["tag"] == *tag
                && d["new_image"] == image.as_str()
                && d["state"] == "succeeded"),
            "no succeeded rollout of {tag}: {records:#?}"
        );
    }
    assert_eq!(records[0]["state"], "rolled_back", "{records:#?}");
    assert_eq!(records[0]["new_image"], pushed[0].as_str());
    assert_eq!(records[0]["old_image"], pushed[1].as_str());

    // The second terminal showed the password the first one logged in with.
    let password = fs::read_to_string(berth_dir.join("data/initial-admin-password")).unwrap();
    assert!(
        second[0].log().contains(password.trim()),
        "{}",
        second[0].log()
    );
}
