//! What ships besides the binary, checked the way it is used: the
//! Kubernetes manifests in deploy/ applied to a real API server (with the
//! Secret made as deploy/README.md says) and fitting berth's config, probes
//! and RBAC; the Secret's files taken by berth; the systemd unit verified by
//! systemd and its command line serving; and a binary that needs nothing
//! beyond libc at run time.

#[path = "common/clients.rs"]
mod clients;
mod common;
#[path = "common/dockerfile.rs"]
mod dockerfile;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clients::{ok, run};
use common::Berth;
use common::kube::Cluster;
use serde_json::Value;

const NAMESPACE: &str = "berth";
/// The Secret deploy/berth.yaml mounts, made by the command in deploy/README.md.
const SECRET: &str = "berth";
const SIGNING_KEY: &str = "token-signing-key.pem";
const ADMIN_PASSWORD: &str = "initial-admin-password";

fn deploy_dir() -> PathBuf {
    common::repo_root().join("deploy")
}

/// The Secret's two files, made as deploy/README.md makes them.
fn make_secret_files(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join(SIGNING_KEY);
    let password = dir.join(ADMIN_PASSWORD);
    ok(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&key));
    ok(Command::new("openssl")
        .args(["rand", "-base64", "-out"])
        .arg(&password)
        .arg("24"));
    (key, password)
}

#[test]
fn the_kubernetes_manifests_are_accepted_and_fit_berth() {
    let cluster = Cluster::start();
    let secrets = tempfile::tempdir().unwrap();
    let (key, password) = make_secret_files(secrets.path());

    // deploy/README.md's order: the namespace and RBAC, the Secret, then
    // everything (a server-side dry run first, as one checks a change).
    let rbac = deploy_dir().join("rbac.yaml");
    cluster.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        SECRET,
        "--namespace",
        NAMESPACE,
        &format!("--from-file={}", key.display()),
        &format!("--from-file={}", password.display()),
    ]);
    let deploy = deploy_dir();
    let deploy = deploy.to_str().unwrap();
    let dry_run = cluster.kubectl(&["apply", "--dry-run=server", "-f", deploy]);
    assert!(
        dry_run.contains("statefulset.apps/berth created (server dry run)"),
        "{dry_run}"
    );
    cluster.kubectl(&["apply", "-f", deploy]);

    // The StatefulSet controller accepts the template: it makes the pod
    // and claims its volume (no node will run it here).
    let pod = cluster.wait_for("the pod berth-0", &["pods", "-n", NAMESPACE], |pods| {
        pods["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|p| p["metadata"]["name"] == "berth-0"))
    });
    let pod = pod["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "berth-0")
        .unwrap()
        .clone();
    cluster.wait_for(
        "the claim data-berth-0",
        &["pvc", "-n", NAMESPACE],
        |claims| {
            claims["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c["metadata"]["name"] == "data-berth-0")
            })
        },
    );
    let spec = &pod["spec"];
    let container = &spec["containers"][0];

    // It runs as the service account rbac.yaml binds, which may do what
    // the deployer does.
    let binding = cluster.get_json(&["clusterrolebinding", "berth-deployer"]);
    let subject = &binding["subjects"][0];
    assert_eq!(spec["serviceAccountName"], subject["name"]);
    assert_eq!(pod["metadata"]["namespace"], subject["namespace"]);
    let account = format!(
        "system:serviceaccount:{}:{}",
        subject["namespace"].as_str().unwrap(),
        subject["name"].as_str().unwrap()
    );
    for (verb, resource, allowed) in [
        ("patch", "deployments.apps", "yes"),
        ("patch", "statefulsets.apps", "yes"),
        ("create", "jobs.batch", "yes"),
        ("delete", "deployments.apps", "no"),
    ] {
        let answer = Command::new(cluster.var("KUBECTL"))
            .env("KUBECONFIG", cluster.var("KUBECONFIG"))
            .args(["auth", "can-i", verb, resource, "--all-namespaces"])
            .args(["--as", &account])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer.stdout);
        assert_eq!(answer.trim(), allowed, "can {account} {verb} {resource}?");
    }

    // Not root, and the image's berth user (the Dockerfile's BERTH_UID).
    let security = &spec["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    let uid = dockerfile::arg("BERTH_UID");
    assert_eq!(security["runAsUser"].to_string(), uid);
    assert_eq!(security["fsGroup"].to_string(), uid);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // The config berth reads is the ConfigMap's, and berth accepts it.
    let mount_of = |volume: &str| -> PathBuf {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of {volume}: {container}"))
            .into()
    };
    let volume = |name: &str| -> Value {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}: {spec}"))
            .clone()
    };
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    let config_path = Path::new(env["BERTH_CONFIG"]);
    assert_eq!(config_path.parent(), Some(mount_of("config").as_path()));
    let map = volume("config")["configMap"]["name"].clone();
    let map = cluster.get_json(&["configmap", map.as_str().unwrap(), "-n", NAMESPACE]);
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let text = map["data"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {file_name}: {map}"));
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("config.toml"), text).unwrap();
    let config = berth::config::Config::load(&work.path().join("config.toml"), true)
        .unwrap_or_else(|err| panic!("berth refuses the ConfigMap's config: {err:#}"));

    // Data on the claimed volume.
    assert_eq!(config.data_dir, mount_of("data"));
    let statefulset = cluster.get_json(&["statefulset", "berth", "-n", NAMESPACE]);
    assert_eq!(
        statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );

    // The signing key and the first admin's password are the Secret's.
    let secret_mount = mount_of("secret");
    assert_eq!(volume("secret")["secret"]["secretName"], SECRET);
    for file in [
        &config.auth.signing_key,
        &config.auth.initial_admin_password_file,
    ] {
        assert_eq!(file.parent(), Some(secret_mount.as_path()), "{file:?}");
    }
    let secret = cluster.get_json(&["secret", SECRET, "-n", NAMESPACE]);
    for file in [
        &config.auth.signing_key,
        &config.auth.initial_admin_password_file,
    ] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(secret["data"][name].is_string(), "no {name} in {secret}");
    }

    // Probes and the Service reach the port berth listens on, and the
    // probes ask what berth answers without credentials.
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == config.listen.port())
        .unwrap_or_else(|| panic!("no container port {}: {container}", config.listen.port()));
    let port_name = &port["name"];
    let service = cluster.get_json(&["service", "berth", "-n", NAMESPACE]);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], *port_name);
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(pod["metadata"]["labels"][label], *value, "selector {label}");
    }
    let berth = Berth::start_secure("");
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], *port_name, "{probe}");
        let path = get["path"].as_str().unwrap();
        assert_eq!(status(&berth.url(path), None), 200, "{probe} {path}");
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn berth_takes_the_first_admin_password_and_signing_key_from_the_secret_files() {
    let secrets = tempfile::tempdir().unwrap();
    let (key, password_file) = make_secret_files(secrets.path());
    let password = fs::read_to_string(&password_file).unwrap();
    let password = password.trim();
    let mut berth = Berth::start_secure(&format!(
        "[auth]\nsigning_key = {key:?}\ninitial_admin_password_file = {password_file:?}\n"
    ));
    assert_eq!(
        status(&berth.url("/v2/"), Some(("admin", password))),
        200,
        "the Secret's password does not log admin in"
    );
    assert!(
        !berth.data_dir().join(ADMIN_PASSWORD).exists(),
        "berth wrote a copy of the given password"
    );

    // Tokens are signed by the Secret's key: whoever holds its public half
    // (another replica, a proxy) verifies them.
    let token = token(&berth, ("admin", password));
    let public = ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["berth"]);
    validation.set_issuer(&["berth"]);
    jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap_or_else(|err| panic!("the token is not signed by the Secret's key: {err}"));

    // The file matters only for the first start: a changed Secret does not
    // change the password of an existing admin.
    fs::write(&password_file, "another password\n").unwrap();
    berth.restart();
    assert_eq!(status(&berth.url("/v2/"), Some(("admin", password))), 200);
}

#[test]
fn berth_refuses_to_start_without_the_named_admin_password_file() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-such-file");
    common::write_config(
        &data.path().join("config.toml"),
        &format!("[auth]\ninitial_admin_password_file = {missing:?}\n"),
    );
    let ran = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--config")
        .arg(data.path().join("config.toml")));
    assert!(!ran.success(), "berth started\n{}", ran.report());
    assert!(
        ran.stderr.contains(&missing.display().to_string()),
        "the error does not name the file\n{}",
        ran.report()
    );
}

/// The image's HEALTHCHECK: `berth healthcheck` finds berth where `berth
/// serve` would listen (a wildcard address through loopback) and fails once
/// it is gone.
#[test]
fn berth_healthcheck_answers_for_the_berth_serving_here() {
    let berth = Berth::start_secure("");
    let port = berth.host.rsplit(':').next().unwrap().to_owned();
    // The built-in defaults (no config.toml here), as the address is all
    // that matters.
    let elsewhere = tempfile::tempdir().unwrap();
    let healthcheck = |listen: &str| {
        run(Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("healthcheck")
            .env("BERTH_LISTEN", listen)
            .current_dir(elsewhere.path()))
    };
    let ran = healthcheck(&format!("0.0.0.0:{port}"));
    assert!(ran.success(), "{}", ran.report());
    drop(berth);
    let ran = healthcheck(&format!("0.0.0.0:{port}"));
    assert!(!ran.success(), "healthy without berth\n{}", ran.report());
}

/// `systemd-analyze verify` loads the unit as systemd would, in a root with
/// the unit, the host's own units (for the targets it names) and the binary
/// at its ExecStart path, and complains about nothing.
#[test]
fn the_systemd_unit_verifies() {
    let unit = deploy_dir().join("berth.service");
    let root = tempfile::tempdir().unwrap();
    let service = unit_section(&unit, "Service");
    let exec = service["ExecStart"][0].split_whitespace().next().unwrap();
    let binary = root.path().join(exec.trim_start_matches('/'));
    fs::create_dir_all(binary.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_berth"), &binary).unwrap();
    let units = root.path().join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    fs::copy(&unit, units.join("berth.service")).unwrap();
    let system_units = root.path().join("usr/lib/systemd");
    fs::create_dir_all(&system_units).unwrap();
    ok(Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(&system_units));

    let ran = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("berth.service"));
    // Unknown keys and bad values are warnings, not failures.
    assert!(
        ran.success() && ran.stderr.trim().is_empty() && ran.stdout.trim().is_empty(),
        "{}",
        ran.report()
    );

    // systemd's own rating of the sandbox: "OK" is below 3.0 of 10.
    let ran = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    assert!(ran.success(), "{}", ran.report());
    let exposure: f64 = ran
        .stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for berth.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level\n{}", ran.report()));
    assert!(exposure < 3.0, "exposure {exposure}\n{}", ran.stdout);
}

/// Without systemd as PID 1 here, the unit cannot be started; this runs its
/// ExecStart with its Environment=, in its state directory, as an
/// unprivileged user with its UMask, the paths moved under a temporary
/// root (the config installed there as the unit's header says), and a free
/// loopback port in place of the config's.
#[test]
fn the_systemd_units_command_line_serves() {
    let unit = deploy_dir().join("berth.service");
    let service = unit_section(&unit, "Service");
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let moved = |path: &str| root.path().join(path.trim_start_matches('/'));

    let state = format!("/var/lib/{}", service["StateDirectory"][0]);
    assert_eq!(service["WorkingDirectory"][0], state);
    fs::create_dir_all(moved(&state)).unwrap();
    let mode = u32::from_str_radix(&service["StateDirectoryMode"][0], 8).unwrap();
    fs::set_permissions(moved(&state), fs::Permissions::from_mode(mode)).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(moved(&state), Some(nobody), Some(nobody)).unwrap();

    let mut env = BTreeMap::new();
    for assignment in &service["Environment"] {
        let (name, value) = assignment.split_once('=').unwrap();
        env.insert(name.to_owned(), moved(value));
    }
    let config = &env["BERTH_CONFIG"];
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::copy(common::repo_root().join("config.toml"), config).unwrap();
    assert_eq!(env["BERTH_DATA_DIR"], moved(&state));
    // The shipped config as it is; on the PostgreSQL pass, its database
    // named the way an operator would without editing the file.
    let database = common::fresh_database();
    if let Some(url) = &database {
        env.insert("BERTH_DATABASE_URL".to_owned(), PathBuf::from(url));
    }

    let exec = &service["ExecStart"][0];
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/berth"));
    let umask = &service["UMask"][0];
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            &nobody.to_string(),
            "--regid",
            &nobody.to_string(),
        ])
        .args(["--clear-groups", "--"])
        .args(["sh", "-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(words)
        .env_clear()
        .envs(&env)
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .current_dir(moved(&state))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start berth as the unit would");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("berth did not say where it listens: {line:?}"))
        .to_owned();
    assert_eq!(status(&format!("{url}/readyz"), None), 200);

    // Everything berth keeps is in the state directory, its own.
    let password = moved(&state).join(ADMIN_PASSWORD);
    let meta = fs::metadata(&password).expect("initial-admin-password in the state directory");
    assert_eq!(meta.uid(), nobody);
    assert_eq!(meta.mode() & 0o777, 0o600);
    if database.is_none() {
        assert!(moved(&state).join("meta.db").exists());
    }

    // A stop is not a failure, so Restart=on-failure leaves it stopped.
    assert_eq!(service["Restart"][0], "on-failure");
    ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let exit = child.wait().unwrap();
    assert!(exit.success(), "berth exited with {exit} on SIGTERM");
}

#[test]
fn the_binary_needs_nothing_beyond_libc() {
    let dynamic = ok(Command::new("readelf")
        .args(["--dynamic", "--wide"])
        .arg(env!("CARGO_BIN_EXE_berth")));
    // 0x... (NEEDED)  Shared library: [libc.so.6]
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{dynamic}");
    let libc = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    for library in &needed {
        assert!(
            libc.contains(library) || library.starts_with("ld-linux"),
            "berth needs {library} at run time: {needed:?}"
        );
    }
}

/// The values of each key of `[section]` in a systemd unit file, in order.
fn unit_section(unit: &Path, section: &str) -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(unit).unwrap();
    let mut current = String::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
        } else if current == section {
            let (key, value) = line.split_once('=').unwrap();
            keys.entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    keys
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The status of GET `url`, with basic auth when given.
fn status(url: &str, basic: Option<(&str, &str)>) -> u16 {
    runtime().block_on(async {
        let mut request = reqwest::Client::new().get(url);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        response.status().as_u16()
    })
}

/// A token from berth's token service for pushing to team/app.
fn token(berth: &Berth, (user, password): (&str, &str)) -> String {
    let url = berth.url("/auth/token?service=berth&scope=repository:team/app:pull,push");
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().expect("token").to_owned()
    })
}
