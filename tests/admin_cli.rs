//! `berth admin ...` against a running berth, as an admin uses it: the
//! tables it prints, `--json` for scripts, and the effect of each command
//! on what registry clients see.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Berth;
use common::push::{OCI_MANIFEST, push_image, push_tagged, put_manifest};
use common::receiver::Receiver;
use reqwest::StatusCode;
use serde_json::Value;

/// `berth admin` with nothing from the environment of whoever runs the
/// tests: an empty HOME (no ~/.config/berth/admin.toml) and none of the
/// BERTH_* connection variables.
fn bare_cli(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("admin")
        .env("HOME", home)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_USER")
        .env_remove("BERTH_PASSWORD")
        .env_remove("BERTH_ADMIN_CONFIG");
    c
}

/// Runs `berth admin --url .. --user admin --password .. ARGS`.
fn run(b: &Berth, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    bare_cli(home.path())
        .args(["--url", &b.url(""), "--user", "admin"])
        .args(["--password", &b.admin_password()])
        .args(args)
        .output()
        .expect("run berth admin")
}

/// Like [`run`], and the command must succeed; returns what it printed.
fn admin(b: &Berth, args: &[&str]) -> String {
    let out = run(b, args);
    assert!(
        out.status.success(),
        "berth admin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn admin_json(b: &Berth, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = admin(b, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The table row whose first column is `first`, split into its cells.
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == first))
}

/// The value of `key` in `berth admin ... show`'s `key  value` lines.
fn field(shown: &str, key: &str) -> String {
    shown
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            (k == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in {shown}"))
}

fn client_as(user: &str, password: &str) -> reqwest::Client {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn admin_client(b: &Berth) -> reqwest::Client {
    client_as("admin", &b.admin_password())
}

async fn v2_status(b: &Berth, user: &str, password: &str) -> StatusCode {
    client_as(user, password)
        .get(b.url("/v2/"))
        .send()
        .await
        .unwrap()
        .status()
}

/// The one line a created account's secret is printed as.
fn secret_of(printed: &str) -> String {
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "{printed}");
    assert!(lines[0].len() >= 16, "{printed}");
    lines[0].to_owned()
}

#[tokio::test]
async fn accounts_and_grants() {
    let b = Berth::start_secure("");

    let alice = secret_of(&admin(&b, &["account", "add", "alice"]));
    let ci = secret_of(&admin(&b, &["account", "add", "ci", "--robot"]));
    assert_eq!(v2_status(&b, "alice", &alice).await, StatusCode::OK);
    assert_eq!(v2_status(&b, "ci", &ci).await, StatusCode::OK);
    assert_eq!(
        v2_status(&b, "alice", "not-her-password").await,
        StatusCode::UNAUTHORIZED
    );

    let accounts = admin(&b, &["account", "list"]);
    assert_eq!(row(&accounts, "alice").unwrap()[1..], ["user", "false"]);
    assert_eq!(row(&accounts, "ci").unwrap()[1..], ["robot", "false"]);

    // The robot may push to team/ only once granted.
    let ci_client = client_as("ci", &ci);
    let manifest = push_image(&admin_client(&b), &b, "team/app", OCI_MANIFEST).await;
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = put_manifest(&ci_client, &b, "team/app", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{r:?}");
    admin(&b, &["grant", "set", "ci", "team", "pull,push"]);
    let grants = admin(&b, &["grant", "list", "ci"]);
    assert_eq!(row(&grants, "team").unwrap()[1], "pull,push", "{grants}");
    let r = put_manifest(&ci_client, &b, "team/app", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let json = admin_json(&b, &["grant", "list", "ci"]);
    assert_eq!(json[0]["namespace"], "team");
    assert_eq!(json[0]["actions"], serde_json::json!(["pull", "push"]));

    admin(&b, &["grant", "revoke", "ci", "team"]);
    assert!(row(&admin(&b, &["grant", "list", "ci"]), "team").is_none());
    let r = put_manifest(&ci_client, &b, "team/app", "v2", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{r:?}");

    // Disabled: the very next request with its credentials is refused.
    let shown = admin(&b, &["account", "disable", "alice"]);
    assert_eq!(field(&shown, "disabled"), "true");
    assert_eq!(
        v2_status(&b, "alice", &alice).await,
        StatusCode::UNAUTHORIZED
    );
    admin(&b, &["account", "enable", "alice"]);
    assert_eq!(v2_status(&b, "alice", &alice).await, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_password_fails_with_a_clear_message() {
    let b = Berth::start_secure("");
    let home = tempfile::tempdir().unwrap();
    let out = bare_cli(home.path())
        .args(["--url", &b.url(""), "--password", "not-the-password"])
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("wrong user name or password"), "{stderr}");

    // An account that is not an admin is told so.
    let bob = secret_of(&admin(&b, &["account", "add", "bob"]));
    let out = bare_cli(home.path())
        .args(["--url", &b.url(""), "--user", "bob", "--password", &bob])
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(stderr.contains("not a registry admin"), "{stderr}");

    // Generated secrets may start with `-`: still a password, not a flag.
    let out = bare_cli(home.path())
        .args([
            "--url",
            &b.url(""),
            "--user",
            "bob",
            "--password",
            "-J-dashed-pass",
        ])
        .args(["repo", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong user name or password"), "{stderr}");
}

#[tokio::test]
async fn connection_settings_from_env_and_config_file() {
    let b = Berth::start_secure("");
    let c = admin_client(&b);
    push_tagged(&c, &b, "team/app", "v1").await;
    let home = tempfile::tempdir().unwrap();

    let out = bare_cli(home.path())
        .env("BERTH_URL", b.url(""))
        .env("BERTH_USER", "admin")
        .env("BERTH_PASSWORD", b.admin_password())
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(row(&String::from_utf8_lossy(&out.stdout), "team/app").is_some());

    let file = format!(
        "url = \"{}\"\nuser = \"admin\"\npassword = \"{}\"\n",
        b.url(""),
        b.admin_password()
    );
    // $BERTH_ADMIN_CONFIG names the file...
    let named = home.path().join("berth-admin.toml");
    std::fs::write(&named, &file).unwrap();
    let out = bare_cli(home.path())
        .env("BERTH_ADMIN_CONFIG", &named)
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(row(&String::from_utf8_lossy(&out.stdout), "team/app").is_some());

    // ... or it is ~/.config/berth/admin.toml.
    let dir = home.path().join(".config/berth");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.toml"), &file).unwrap();
    let out = bare_cli(home.path())
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(row(&String::from_utf8_lossy(&out.stdout), "team/app").is_some());

    // Flags win over the file.
    let out = bare_cli(home.path())
        .args(["--password", "not-the-password", "repo", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Nothing anywhere: the error says where settings come from.
    let empty = tempfile::tempdir().unwrap();
    let out = bare_cli(empty.path())
        .args(["repo", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BERTH_URL"), "{stderr}");
}

fn tags_of(b: &Berth, repo: &str) -> Vec<String> {
    let mut tags: Vec<String> = admin_json(b, &["tag", "list", repo])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

#[tokio::test]
async fn repositories_tags_and_manifests() {
    let b = Berth::start_secure("");
    let c = admin_client(&b);
    let v1 = push_tagged(&c, &b, "team/app", "v1").await;
    push_tagged(&c, &b, "team/app", "v2").await;
    push_tagged(&c, &b, "tools/cli", "latest").await;

    let table = admin(&b, &["repo", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(row(&table, "team/app").unwrap()[1], "2", "{table}");
    assert_eq!(row(&table, "tools/cli").unwrap()[1], "1", "{table}");
    let list = admin_json(&b, &["repo", "list"]);
    let app = list["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "team/app")
        .expect("team/app in --json");
    assert_eq!(app["tag_count"], 2);
    assert!(app["total_size"].as_i64().unwrap() > 6000, "{app}");
    assert!(app["unique_size"].as_i64().unwrap() > 6000, "{app}");
    let filtered = admin(&b, &["repo", "list", "--filter", "tools"]);
    assert!(row(&filtered, "team/app").is_none() && row(&filtered, "tools/cli").is_some());

    let shown = admin(&b, &["repo", "show", "team/app"]);
    assert_eq!(field(&shown, "tag_count"), "2");
    assert_eq!(field(&shown, "manifest_count"), "2");

    // The pushed image's config says linux/amd64.
    let tags = admin(&b, &["tag", "list", "team/app"]);
    let v1_row = row(&tags, "v1").unwrap();
    assert_eq!(v1_row[1], v1);
    assert!(v1_row.contains(&"linux/amd64".to_owned()), "{tags}");
    // SIZE is the image's (a 3,000-byte layer and its config), in human
    // units.
    assert_eq!(v1_row[3], "kB", "{tags}");
    let kb: f64 = v1_row[2].parse().unwrap();
    assert!((3.0..3.2).contains(&kb), "{tags}");

    // Immutable tags: v1 cannot move, but pushing the same manifest again
    // (a retried push) is fine.
    let shown = admin(
        &b,
        &["repo", "settings", "team/app", "--immutable-tags", "true"],
    );
    assert_eq!(field(&shown, "immutable_tags"), "true");
    let other = push_image(&c, &b, "team/app", OCI_MANIFEST).await;
    let other = serde_json::to_vec(&other).unwrap();
    let r = put_manifest(&c, &b, "team/app", "v1", OCI_MANIFEST, &other).await;
    common::expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let same = c
        .get(b.url(&format!("/v2/team/app/manifests/{v1}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = put_manifest(&c, &b, "team/app", "v1", OCI_MANIFEST, &same).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    admin(
        &b,
        &["repo", "settings", "team/app", "--immutable-tags", "false"],
    );

    // Public read: anonymous pulls work, then are refused again.
    let anonymous = reqwest::Client::new();
    let pull = || {
        anonymous
            .get(b.url("/v2/team/app/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .send()
    };
    assert_eq!(pull().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let shown = admin(
        &b,
        &["repo", "settings", "team/app", "--public-read", "true"],
    );
    assert_eq!(field(&shown, "public_read"), "true");
    assert_eq!(pull().await.unwrap().status(), StatusCode::OK);
    admin(
        &b,
        &["repo", "settings", "team/app", "--public-read", "false"],
    );
    assert_eq!(pull().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Retention: keep the newest 2 tags, applied at once and after pushes.
    // A repository of its own, whose tags were each pushed once, in order.
    for tag in ["r1", "r2", "r3"] {
        push_tagged(&c, &b, "team/svc", tag).await;
    }
    let shown = admin(&b, &["repo", "settings", "team/svc", "--keep-last", "2"]);
    assert!(
        field(&shown, "retention").contains("\"keep_last\":2"),
        "{shown}"
    );
    assert_eq!(tags_of(&b, "team/svc"), ["r2", "r3"]);
    push_tagged(&c, &b, "team/svc", "r4").await;
    assert_eq!(tags_of(&b, "team/svc"), ["r3", "r4"]);
    let dry = admin(&b, &["repo", "retention", "team/svc", "--dry-run"]);
    assert!(dry.contains("would delete 0 tag(s)"), "{dry}");
    let shown = admin(&b, &["repo", "settings", "team/svc", "--keep-last", "1"]);
    assert!(
        field(&shown, "retention").contains("\"keep_last\":1"),
        "{shown}"
    );
    assert_eq!(tags_of(&b, "team/svc"), ["r4"]);

    // Tags, manifests, repositories deleted from the CLI are gone for
    // registry clients too.
    let v5 = push_tagged(&c, &b, "tools/cli", "v5").await;
    admin(&b, &["tag", "delete", "tools/cli", "latest"]);
    assert_eq!(tags_of(&b, "tools/cli"), ["v5"]);
    let r = c
        .get(b.url("/v2/tools/cli/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let manifests = admin(&b, &["manifest", "list", "tools/cli"]);
    assert!(row(&manifests, &v5).is_some(), "{manifests}");
    admin(&b, &["manifest", "delete", "tools/cli", &v5]);
    let manifests = admin(&b, &["manifest", "list", "tools/cli"]);
    assert!(row(&manifests, &v5).is_none(), "{manifests}");
    let r = c
        .get(b.url(&format!("/v2/tools/cli/manifests/{v5}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    admin(&b, &["repo", "delete", "team/app"]);
    assert!(row(&admin(&b, &["repo", "list"]), "team/app").is_none());
    let out = run(&b, &["repo", "show", "team/app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

// The CLI runs as a blocking child process; a second worker keeps the
// receiver answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliveries_and_audit() {
    let receiver = Receiver::start(0).await;
    let b = Berth::start_secure("[events]\nfirst_backoff_seconds = 1\n");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("hook.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"ci\"\nurl = \"http://{}/hook\"\nactions = [\"push\"]\n",
            receiver.addr
        ),
    )
    .unwrap();

    let shown = admin(&b, &["webhook", "add", spec.to_str().unwrap()]);
    assert_eq!(field(&shown, "name"), "ci");
    assert_eq!(field(&shown, "from_config"), "false");
    let hooks = admin(&b, &["webhook", "list"]);
    assert_eq!(row(&hooks, "ci").unwrap()[1], "false", "{hooks}");

    let tested = admin(&b, &["webhook", "test", "ci"]);
    assert!(tested.starts_with("ok"), "{tested}");
    receiver.wait_for_action("ping", 1).await;

    let c = admin_client(&b);
    push_tagged(&c, &b, "team/app", "v1").await;
    receiver.wait_for_action("push", 1).await;

    // The delivery log shows it delivered; redelivering sends it again.
    let deliveries = admin_json(&b, &["deliveries", "--sink", "webhook:ci"]);
    let delivery = deliveries
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["state"] == "delivered")
        .unwrap_or_else(|| panic!("no delivered delivery in {deliveries}"))
        .clone();
    let table = admin(&b, &["deliveries"]);
    let seq = delivery["event_seq"].to_string();
    let line = row(&table, &seq).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(line[1..3], ["webhook:ci", "delivered"], "{table}");
    let done = admin(&b, &["redeliver", &seq, "webhook:ci"]);
    assert!(done.contains(&seq), "{done}");
    receiver.wait_for_action("push", 2).await;

    // The audit log names who did it, from where.
    let audit = admin_json(&b, &["audit"]);
    let created = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "webhook.create")
        .unwrap_or_else(|| panic!("no webhook.create in {audit}"));
    assert_eq!(created["actor"], "admin");
    assert_eq!(created["address"], "127.0.0.1");
    assert_eq!(created["target"], "ci");
    let table = admin(&b, &["audit"]);
    assert!(table.starts_with("AT"), "{table}");
    assert!(
        table.lines().any(|l| l.contains("admin")
            && l.contains("127.0.0.1")
            && l.contains("delivery.redeliver")),
        "{table}"
    );

    // No deploy rules on this instance: the table is only its header.
    let rules = admin(&b, &["rule", "list"]);
    assert_eq!(rules.lines().count(), 1, "{rules}");
    assert!(rules.starts_with("NAME"), "{rules}");

    admin(&b, &["webhook", "delete", "ci"]);
    assert!(row(&admin(&b, &["webhook", "list"]), "ci").is_none());
}

#[tokio::test]
async fn rules_from_the_config_file_are_marked() {
    // No cluster is reachable, so the rule cannot run; it is still listed.
    let b = Berth::start_secure(
        "[[deploy.rules]]\nname = \"web\"\nrepository = \"team/app\"\n\
         [[deploy.rules.targets]]\nnamespace = \"prod\"\nname = \"web\"\n",
    );
    let rules = admin(&b, &["rule", "list"]);
    assert_eq!(row(&rules, "web").unwrap()[1], "true", "{rules}");
    let json = admin_json(&b, &["rule", "show", "web"]);
    assert_eq!(json["from_config"], true);
    assert_eq!(json["spec"]["repository"], "team/app");
    // Read-only here: the config file is where it changes.
    let out = run(&b, &["rule", "delete", "web"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config file"), "{stderr}");
}
