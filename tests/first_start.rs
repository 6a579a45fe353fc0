//! The first minutes with berth: what the first start prints works as
//! printed, and a start that cannot listen says where and what to do.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clients::{Docker, RemoveIfCreated, run, short_tempdir};

/// Starts `berth serve` on `listen` in `dir` (its data directory `data`
/// there) and returns it with what it printed on standard error until it
/// printed the end of the first-start notice, or exited.
fn serve(dir: &std::path::Path, listen: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", listen])
        .current_dir(dir)
        .env("RUST_LOG", "berth=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    // The notice ends with a line of stars, after the one that opens it.
    while printed.matches("*****\n").count() < 2 && Instant::now() < deadline {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => printed.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    // Keep reading what else it logs, so that it never writes to a closed
    // pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, printed)
}

#[test]
fn the_first_start_prints_a_login_command_that_works() {
    let work = short_tempdir();
    // Every address, as the default 0.0.0.0:8888 is (on a free port).
    let listen = format!("0.0.0.0:{}", common::free_port());
    let (mut berth, printed) = serve(work.path(), &listen);
    let command = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker login"))
        .unwrap_or_else(|| panic!("no docker login command in:\n{printed}"))
        .to_owned();
    // docker treats only loopback as a plain-HTTP registry: the command
    // must name it, not the wildcard address berth listens on.
    assert!(!command.contains("0.0.0.0"), "{command}");
    assert!(
        printed.contains("insecure-registries"),
        "nothing said about other machines:\n{printed}"
    );
    // Log lines written to a pipe (a file, a collector) carry no colour
    // codes; there are some among what it printed.
    assert!(printed.contains(" INFO "), "{printed}");
    assert!(!printed.contains('\x1b'), "colour codes in:\n{printed}");

    let _created = RemoveIfCreated::new(&["/run/docker/plugins", "/run/docker"]);
    let docker = Docker::start(&work.path().join("d"));
    // Run exactly what was printed, from where berth was started.
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(&command).current_dir(work.path());
    for (key, value) in docker.cmd(&[]).get_envs() {
        shell.env(key, value.expect("docker env"));
    }
    let ran = run(&mut shell);
    assert!(
        ran.success() && ran.stdout.contains("Login Succeeded"),
        "{command}\n{}",
        ran.report()
    );
    let _ = berth.kill();
    let _ = berth.wait();
}

#[test]
fn an_address_in_use_is_named_with_how_to_choose_another() {
    let work = short_tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (mut berth, printed) = serve(work.path(), &addr);
    let status = berth.wait().expect("berth exits");
    assert!(!status.success(), "berth served on a taken address");
    for expected in [addr.as_str(), "--listen", "BERTH_LISTEN"] {
        assert!(
            printed.contains(expected),
            "{expected:?} not in:\n{printed}"
        );
    }
    // Nothing was created for a start that could not listen.
    assert!(!work.path().join("data/initial-admin-password").exists());
}
