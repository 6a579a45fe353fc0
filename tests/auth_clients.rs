//! Authentication end to end, with the real clients people use: docker and
//! podman log in, skopeo and containerd pass credentials on the command line,
//! a kubelet-style robot pulls with the secret `berth robot add
//! --pull-secret` prints, skopeo trusts a test CA over HTTPS (and a renewed
//! certificate from another CA), and users imported from an htpasswd file
//! push.
//!
//! Every test starts its own berth with credentials required (the default),
//! makes fresh accounts with the `berth` CLI, and keeps each client's
//! credentials in its own temporary directory. A client that is refused must
//! say why in words a user understands (unauthorized, denied, certificate).
//! No account gets more than four wrong passwords: the fifth would lock it
//! out for 30 seconds.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use clients::{
    Containerd, Docker, Image, Podman, Ran, RemoveIfCreated, hex_of, ok, pushed_digest, read, run,
    run_with_input, served_manifest_as, short_tempdir,
};
use common::Berth;
use serde_json::Value;

const ALICE_PASSWORD: &str = "alice-correct-horse";
const READER_PASSWORD: &str = "reader-battery-staple";
/// How long a renewed certificate may take to be served (berth looks every
/// second here).
const CERT_RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Adds the user `name` with `password`, then grants it `actions` on each
/// namespace in `grants`.
fn add_user(berth: &Berth, name: &str, password: &str, grants: &[(&str, &str)]) {
    berth.manage_with_input(
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    for (namespace, actions) in grants {
        berth.manage(&["grant", name, namespace, actions]);
    }
}

/// `Basic <base64(user:password)>`.
fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Asserts that the command failed and that what it printed mentions one of
/// `words` (case-insensitively), as a user reading it would need.
fn assert_refused(ran: &Ran, words: &[&str]) {
    assert!(
        !ran.success(),
        "expected the command to be refused\n{}",
        ran.report()
    );
    let said = format!("{}\n{}", ran.stdout, ran.stderr).to_lowercase();
    assert!(
        words.iter().any(|word| said.contains(word)),
        "expected the client to mention one of {words:?}\n{}",
        ran.report()
    );
}

/// skopeo with an auth file of its own (which does not exist), so only the
/// credentials on its command line count.
fn skopeo(work: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.env("REGISTRY_AUTH_FILE", work.join("skopeo-auth.json"))
        .args(args);
    cmd
}

/// Pushes `image` with skopeo over plain HTTP to `docker://<dest>` as
/// `creds` (`user:password`), keeping its digests.
fn skopeo_push(work: &Path, image: &Image, dest: &str, creds: &str) -> Ran {
    run(&mut skopeo(
        work,
        &[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &image.oci_ref(),
            &format!("docker://{dest}"),
        ],
    ))
}

/// The manifest digest in an OCI layout's index.json (the only entry).
fn layout_manifest_digest(layout: &Path) -> String {
    let index: Value = serde_json::from_slice(&read(&layout.join("index.json"))).unwrap();
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests in index.json")
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(digests.len(), 1, "index.json of the pulled layout: {index}");
    digests[0].to_owned()
}

// ---------------------------------------------------------------------------
// docker
// ---------------------------------------------------------------------------

#[test]
fn docker_login_push_pull_and_refusals() {
    let work = short_tempdir();
    let berth = Berth::start_secure("");
    add_user(&berth, "alice", ALICE_PASSWORD, &[("team", "pull,push")]);
    add_user(&berth, "reader", READER_PASSWORD, &[("team", "pull")]);
    let admin = basic("admin", &berth.admin_password());
    let image = Image::generate(work.path(), "dk", "v1", 2, 300_000);
    // dockerd creates /run/docker/plugins whatever its --exec-root is.
    let _created = RemoveIfCreated::new(&["/run/docker/plugins", "/run/docker"]);
    let docker = Docker::start(&work.path().join("d"));
    let app = format!("{}/team/app:1", berth.host);
    let other = format!("{}/other/app:1", berth.host);
    let login = |user: &str, password: &str| {
        run_with_input(
            &mut docker.cmd(&["login", "-u", user, "--password-stdin", &berth.host]),
            Some(&format!("{password}\n")),
        )
    };

    ok(&mut docker.cmd(&["load", "-i", image.docker_archive.to_str().unwrap()]));
    ok(&mut docker.cmd(&["tag", "test/dk:v1", &app]));

    // Not logged in: refused. berth answers 401; docker words any refused
    // push as "denied: requested access to the resource is denied".
    assert_refused(
        &run(&mut docker.cmd(&["push", &app])),
        &["unauthorized", "denied"],
    );

    let ran = login("alice", ALICE_PASSWORD);
    assert!(ran.success(), "docker login\n{}", ran.report());
    assert!(ran.stdout.contains("Login Succeeded"), "{}", ran.report());
    let out = ok(&mut docker.cmd(&["push", &app]));
    let served = served_manifest_as(&berth, "team/app", "1", Some(&admin));
    assert_eq!(pushed_digest(&out), served.digest, "docker push:\n{out}");

    ok(&mut docker.cmd(&["rmi", "-f", &image.config_digest]));
    ok(&mut docker.cmd(&["pull", &app]));
    assert_eq!(docker.inspect(&app, "{{.Id}}"), image.config_digest);

    // alice may push to team/ only.
    ok(&mut docker.cmd(&["tag", &app, &other]));
    assert_refused(&run(&mut docker.cmd(&["push", &other])), &["denied"]);

    // A read-only account pulls, and cannot push.
    let ran = login("reader", READER_PASSWORD);
    assert!(ran.success(), "docker login\n{}", ran.report());
    ok(&mut docker.cmd(&["rmi", "-f", &image.config_digest]));
    ok(&mut docker.cmd(&["pull", &app]));
    assert_eq!(docker.inspect(&app, "{{.Id}}"), image.config_digest);
    let by_reader = format!("{}/team/app:by-reader", berth.host);
    ok(&mut docker.cmd(&["tag", &app, &by_reader]));
    assert_refused(&run(&mut docker.cmd(&["push", &by_reader])), &["denied"]);

    // A wrong password is refused at login.
    assert_refused(&login("alice", "not-alices-password"), &["unauthorized"]);
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

#[test]
fn podman_login_push_pull_and_wrong_password() {
    let work = short_tempdir();
    let berth = Berth::start_secure("");
    add_user(&berth, "alice", ALICE_PASSWORD, &[("team", "pull,push")]);
    let image = Image::generate(work.path(), "pod", "v1", 2, 300_000);
    let podman = Podman::new(&work.path().join("podman"));
    let config_hex = hex_of(&image.config_digest);
    let remote = format!("{}/team/podman:1", berth.host);
    let login = |password: &str| {
        run_with_input(
            &mut podman.cmd(&[
                "login",
                "--tls-verify=false",
                "-u",
                "alice",
                "--password-stdin",
                &berth.host,
            ]),
            Some(&format!("{password}\n")),
        )
    };

    ok(&mut podman.cmd(&["load", "-i", image.docker_archive.to_str().unwrap()]));
    ok(&mut podman.cmd(&["tag", config_hex, &remote]));

    let ran = login(ALICE_PASSWORD);
    assert!(ran.success(), "podman login\n{}", ran.report());
    assert!(ran.stdout.contains("Login Succeeded"), "{}", ran.report());
    ok(&mut podman.cmd(&["push", "--tls-verify=false", &remote]));
    let served = served_manifest_as(
        &berth,
        "team/podman",
        "1",
        Some(&basic("alice", ALICE_PASSWORD)),
    );
    let manifest: Value = serde_json::from_slice(&served.body).unwrap();
    assert_eq!(manifest["config"]["digest"], image.config_digest);

    ok(&mut podman.cmd(&["rmi", "-a", "-f"]));
    ok(&mut podman.cmd(&["pull", "--tls-verify=false", &remote]));
    let id = ok(&mut podman.cmd(&["image", "inspect", "--format", "{{.Id}}", &remote]));
    assert_eq!(id.trim(), config_hex, "pulled image ID");

    assert_refused(
        &login("not-alices-password"),
        &["invalid username/password", "unauthorized"],
    );
}

// ---------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------

#[test]
fn skopeo_credentials_push_pull_and_refusals() {
    let work = short_tempdir();
    let berth = Berth::start_secure("");
    add_user(&berth, "alice", ALICE_PASSWORD, &[("team", "pull,push")]);
    add_user(&berth, "reader", READER_PASSWORD, &[("team", "pull")]);
    let alice = format!("alice:{ALICE_PASSWORD}");
    let reader = format!("reader:{READER_PASSWORD}");
    let image = Image::generate(work.path(), "img", "v1", 2, 300_000);
    let app = format!("docker://{}/team/app:1", berth.host);
    let other = format!("docker://{}/other/app:1", berth.host);
    let pull = |source: &str, creds: Option<&str>, into: &str| {
        let layout = format!("oci:{}:1", work.path().join(into).display());
        let mut args = vec!["copy", "--src-tls-verify=false"];
        if let Some(creds) = creds {
            args.extend(["--src-creds", creds]);
        }
        args.extend([source, &layout]);
        run(&mut skopeo(work.path(), &args))
    };

    let ran = skopeo_push(
        work.path(),
        &image,
        &format!("{}/team/app:1", berth.host),
        &alice,
    );
    assert!(ran.success(), "push as alice\n{}", ran.report());
    let served = served_manifest_as(
        &berth,
        "team/app",
        "1",
        Some(&basic("alice", ALICE_PASSWORD)),
    );
    assert_eq!(served.digest, image.manifest_digest);
    let admin = format!("admin:{}", berth.admin_password());
    let ran = skopeo_push(
        work.path(),
        &image,
        &format!("{}/other/app:1", berth.host),
        &admin,
    );
    assert!(ran.success(), "push as admin\n{}", ran.report());

    let ran = pull(&app, Some(&alice), "by-alice");
    assert!(ran.success(), "pull as alice\n{}", ran.report());
    assert_eq!(
        layout_manifest_digest(&work.path().join("by-alice")),
        image.manifest_digest
    );
    let ran = pull(&app, Some(&reader), "by-reader");
    assert!(ran.success(), "pull as reader\n{}", ran.report());
    assert_eq!(
        layout_manifest_digest(&work.path().join("by-reader")),
        image.manifest_digest
    );

    // The reader may not read another team's namespace.
    assert_refused(&pull(&other, Some(&reader), "other-by-reader"), &["denied"]);
    // Without credentials nothing can be read.
    assert_refused(
        &pull(&app, None, "anonymous"),
        &["unauthorized", "anonymous"],
    );
    // Nor pushed: the reader cannot push to its own team.
    assert_refused(
        &skopeo_push(
            work.path(),
            &image,
            &format!("{}/team/app:2", berth.host),
            &reader,
        ),
        &["denied"],
    );
}

// ---------------------------------------------------------------------------
// containerd, with a robot's pull secret
// ---------------------------------------------------------------------------

#[test]
fn containerd_pulls_with_a_robot_pull_secret() {
    let work = short_tempdir();
    let berth = Berth::start_secure("");
    add_user(&berth, "alice", ALICE_PASSWORD, &[("team", "pull,push")]);
    let image = Image::generate(work.path(), "ctr", "v1", 2, 300_000);
    let ran = skopeo_push(
        work.path(),
        &image,
        &format!("{}/team/app:1", berth.host),
        &format!("alice:{ALICE_PASSWORD}"),
    );
    assert!(ran.success(), "push as alice\n{}", ran.report());

    let out = berth.manage(&["robot", "add", "kubelet", "--pull-secret", &berth.host]);
    let secret = out
        .lines()
        .find_map(|line| line.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret in `berth robot add`:\n{out}"))
        .to_owned();
    let config: Value = out
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("dockerconfigjson is JSON"))
        .unwrap_or_else(|| panic!("no dockerconfigjson in `berth robot add`:\n{out}"));
    let entry = &config["auths"][berth.host.as_str()];
    assert_eq!(entry["username"], "kubelet", "{config}");
    assert_eq!(entry["password"], secret.as_str(), "{config}");
    let auth = entry["auth"].as_str().expect("auth in dockerconfigjson");
    berth.manage(&["grant", "kubelet", "team", "pull"]);

    // What a kubelet does with the imagePullSecret.
    let containerd = Containerd::start(&work.path().join("c"));
    let reference = format!("{}/team/app:1", berth.host);
    let user = format!("kubelet:{secret}");
    ok(&mut containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &user,
        &reference,
    ]));
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let row = containerd.image_row("ls", &reference);
    assert_eq!(
        row.get(2),
        Some(&image.manifest_digest),
        "ctr images ls: {row:?}"
    );

    // The `auth` string as an Authorization header.
    let served = served_manifest_as(&berth, "team/app", "1", Some(&format!("Basic {auth}")));
    assert_eq!(served.digest, image.manifest_digest);

    // A wrong secret is refused (ctr tries the token service twice: POST,
    // then GET).
    ok(&mut containerd.ctr(&["images", "rm", &reference]));
    let ran = run(&mut containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        "kubelet:not-the-secret",
        &reference,
    ]));
    assert_refused(&ran, &["401", "unauthorized"]);
}

// ---------------------------------------------------------------------------
// HTTPS with a test CA, and a renewed certificate
// ---------------------------------------------------------------------------

/// A test certificate authority and a server certificate it signed for
/// 127.0.0.1, made with the openssl CLI in `dir`.
struct TestCa {
    /// A directory holding only the CA certificate as `ca.crt`, as
    /// `--cert-dir` expects.
    trust_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> TestCa {
        fs::create_dir_all(dir).unwrap();
        let path = |file: &str| dir.join(file);
        let openssl = |args: &[&str]| ok(Command::new("openssl").args(args));
        let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let (ca_key, ca_cert) = (path("ca.key"), path("ca.pem"));
        let subject = format!("/CN=berth test CA {name}");
        openssl(
            &[
                &["req", "-x509", "-nodes", "-days", "2"][..],
                &p256,
                &["-subj", &subject],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                &["-keyout", ca_key.to_str().unwrap()],
                &["-out", ca_cert.to_str().unwrap()],
            ]
            .concat(),
        );
        let (key, csr, cert) = (path("server.key"), path("server.csr"), path("server.pem"));
        openssl(
            &[
                &["req", "-new", "-nodes"][..],
                &p256,
                &["-subj", "/CN=127.0.0.1"],
                &["-keyout", key.to_str().unwrap()],
                &["-out", csr.to_str().unwrap()],
            ]
            .concat(),
        );
        let extensions = path("server.ext");
        fs::write(
            &extensions,
            "subjectAltName = IP:127.0.0.1\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca_cert.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-CAcreateserial",
            "-extfile",
            extensions.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        let trust_dir = path("trust");
        fs::create_dir_all(&trust_dir).unwrap();
        fs::copy(&ca_cert, trust_dir.join("ca.crt")).unwrap();
        TestCa {
            trust_dir,
            cert,
            key,
        }
    }
}

/// Copies `from` over `to` the way a certificate renewal tool does: write
/// beside it, then rename into place.
fn replace_file(from: &Path, to: &Path) {
    let staging = to.with_extension("new");
    fs::copy(from, &staging).unwrap();
    fs::rename(&staging, to).unwrap();
}

#[test]
fn https_with_a_test_ca_and_a_renewed_certificate() {
    let work = short_tempdir();
    let first = TestCa::new(&work.path().join("ca1"), "one");
    let second = TestCa::new(&work.path().join("ca2"), "two");
    let served_dir = work.path().join("served");
    fs::create_dir_all(&served_dir).unwrap();
    let (cert, key) = (served_dir.join("cert.pem"), served_dir.join("key.pem"));
    fs::copy(&first.cert, &cert).unwrap();
    fs::copy(&first.key, &key).unwrap();
    let berth = Berth::start_secure(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nreload_interval_seconds = 1\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    ));
    assert_eq!(berth.scheme, "https");
    add_user(&berth, "alice", ALICE_PASSWORD, &[("team", "pull,push")]);
    let creds = format!("alice:{ALICE_PASSWORD}");
    let image = Image::generate(work.path(), "tls", "v1", 2, 300_000);
    let dest = format!("docker://{}/team/app:1", berth.host);
    let untrusting = work.path().join("no-ca");
    fs::create_dir_all(&untrusting).unwrap();
    let push = |trust: &Path| {
        run(&mut skopeo(
            work.path(),
            &[
                "copy",
                "--preserve-digests",
                "--dest-cert-dir",
                trust.to_str().unwrap(),
                "--dest-creds",
                &creds,
                &image.oci_ref(),
                &dest,
            ],
        ))
    };
    let inspect = |trust: &Path| {
        run(&mut skopeo(
            work.path(),
            &[
                "inspect",
                "--raw",
                "--cert-dir",
                trust.to_str().unwrap(),
                "--creds",
                &creds,
                &dest,
            ],
        ))
    };
    let certificate_errors = ["x509", "certificate"];

    // Verification is on: without the CA the certificate is refused.
    assert_refused(&push(&untrusting), &certificate_errors);
    let ran = push(&first.trust_dir);
    assert!(ran.success(), "push trusting the CA\n{}", ran.report());

    // Renewal, by another CA: berth serves the new certificate without a
    // restart.
    replace_file(&second.key, &key);
    replace_file(&second.cert, &cert);
    let start = Instant::now();
    loop {
        let ran = inspect(&second.trust_dir);
        if ran.success() {
            assert_eq!(
                common::sha256(ran.stdout.as_bytes()),
                image.manifest_digest,
                "manifest served after the renewal"
            );
            break;
        }
        assert!(
            start.elapsed() < CERT_RELOAD_TIMEOUT,
            "the renewed certificate was not served within {CERT_RELOAD_TIMEOUT:?}\n{}",
            ran.report()
        );
        thread::sleep(Duration::from_millis(300));
    }
    assert_refused(&inspect(&first.trust_dir), &certificate_errors);
    let back = work.path().join("back");
    ok(&mut skopeo(
        work.path(),
        &[
            "copy",
            "--src-cert-dir",
            second.trust_dir.to_str().unwrap(),
            "--src-creds",
            &creds,
            &dest,
            &format!("oci:{}:1", back.display()),
        ],
    ));
    assert_eq!(layout_manifest_digest(&back), image.manifest_digest);
}

// ---------------------------------------------------------------------------
// Migrating users from an htpasswd file
// ---------------------------------------------------------------------------

#[test]
fn users_imported_from_htpasswd_push() {
    let work = short_tempdir();
    let berth = Berth::start_secure("");
    let htpasswd = |flag: &str, user: &str, password: &str| {
        ok(Command::new("htpasswd").args([flag, "-b", "-n", user, password]))
            .trim()
            .to_owned()
    };
    let carol_password = "carol-from-registry2";
    let file = work.path().join("htpasswd");
    fs::write(
        &file,
        format!(
            "{}\n{}\n",
            htpasswd("-B", "carol", carol_password),
            htpasswd("-B", "dave", "dave-from-registry2")
        ),
    )
    .unwrap();

    let out = berth.manage(&["user", "import-htpasswd", file.to_str().unwrap()]);
    assert!(
        out.contains("imported 2 users"),
        "import-htpasswd said:\n{out}"
    );
    let listed = berth.manage(&["user", "list"]);
    for user in ["carol", "dave"] {
        assert!(
            listed
                .lines()
                .any(|line| line.split_whitespace().next() == Some(user)),
            "`berth user list` lacks {user}:\n{listed}"
        );
    }
    berth.manage(&["grant", "carol", "team", "pull,push"]);

    let image = Image::generate(work.path(), "ht", "v1", 2, 300_000);
    let ran = skopeo_push(
        work.path(),
        &image,
        &format!("{}/team/app:1", berth.host),
        &format!("carol:{carol_password}"),
    );
    assert!(ran.success(), "push as carol\n{}", ran.report());
    let served = served_manifest_as(
        &berth,
        "team/app",
        "1",
        Some(&basic("carol", carol_password)),
    );
    assert_eq!(served.digest, image.manifest_digest);

    // An entry in a weaker format is refused, saying how to make one that is
    // accepted.
    let weak = work.path().join("htpasswd-md5");
    fs::write(
        &weak,
        format!("{}\n", htpasswd("-m", "erin", "erin-password")),
    )
    .unwrap();
    let ran = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["user", "import-htpasswd"])
        .arg(&weak)
        .arg("--data-dir")
        .arg(berth.data_dir())
        .arg("--config")
        .arg(berth.data_dir().join("config.toml")));
    assert_refused(&ran, &["bcrypt"]);
}
