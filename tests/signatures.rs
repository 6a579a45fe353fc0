//! cosign signatures made independently of berth: openssl makes the key
//! pairs and signs simple-signing payloads (`openssl dgst -sha256 -sign`,
//! as cosign signs with a key), and the signature manifests go up as cosign
//! stores them, with oras or plain HTTP, in both layouts: the tag
//! `sha256-<hex>.sig` and a referrer naming the image as its subject.
//!
//! Then what a user sees: protected pulls refused with 403 DENIED naming
//! the image, the policy and the reason (each bad signature its own),
//! signed ones served (to ctr too), deploy rules that wait for a signature
//! pushed seconds after the image and record `unsigned` when none comes,
//! and keys rotated through the admin API.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clients::{Containerd, Image, ok, short_tempdir};
use common::push::{OCI_MANIFEST, push_blob, push_image, put_manifest};
use common::{Berth, expect_error, sha256};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

#[derive(Clone, Copy)]
enum Kind {
    Ecdsa,
    Rsa,
    Ed25519,
}

/// A key pair made by openssl, as PEM files.
struct KeyPair {
    private: PathBuf,
    public: PathBuf,
    kind: Kind,
}

impl KeyPair {
    fn generate(dir: &Path, name: &str, kind: Kind) -> KeyPair {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let algorithm: &[&str] = match kind {
            Kind::Ecdsa => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Kind::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Kind::Ed25519 => &["-algorithm", "ED25519"],
        };
        ok(Command::new("openssl")
            .arg("genpkey")
            .args(algorithm)
            .arg("-out")
            .arg(&private));
        ok(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public));
        KeyPair {
            private,
            public,
            kind,
        }
    }

    fn public_pem(&self) -> String {
        std::fs::read_to_string(&self.public).unwrap()
    }

    /// The base64 signature over exactly `payload`, as cosign makes it:
    /// SHA-256 with ECDSA or RSA PKCS#1 v1.5, Ed25519 over the bytes.
    fn sign(&self, payload: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("payload.json");
        let output = dir.path().join("payload.sig");
        std::fs::write(&input, payload).unwrap();
        match self.kind {
            Kind::Ecdsa | Kind::Rsa => ok(Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&self.private)
                .arg("-out")
                .arg(&output)
                .arg(&input)),
            Kind::Ed25519 => ok(Command::new("openssl")
                .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
                .arg(&self.private)
                .arg("-in")
                .arg(&input)
                .arg("-out")
                .arg(&output)),
        };
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&output).unwrap())
    }
}

/// A simple-signing payload naming `digest`, as `cosign sign` writes it.
fn payload(b: &Berth, repo: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        b.host
    )
    .into_bytes()
}

fn signature_tag(digest: &str) -> String {
    format!("sha256-{}.sig", digest.trim_start_matches("sha256:"))
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// The tag `sha256-<hex>.sig`.
    Tag,
    /// A referrer whose subject is the image (cosign's oci-1-1 mode).
    Referrer,
}

/// A pushed image: its digest and manifest size.
struct Pushed {
    digest: String,
    size: usize,
}

async fn push_image_tagged(c: &Client, b: &Berth, repo: &str, tag: &str) -> Pushed {
    let manifest = push_image(c, b, repo, OCI_MANIFEST).await;
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = put_manifest(c, b, repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    Pushed {
        digest: sha256(&body),
        size: body.len(),
    }
}

/// Pushes a signature manifest over HTTP, as cosign does: the payload
/// blob, a config, and a manifest whose layer carries `annotation` (the
/// base64 signature; none: no annotation). Returns its digest.
async fn push_signature(
    c: &Client,
    b: &Berth,
    repo: &str,
    image: &Pushed,
    payload: &[u8],
    annotation: Option<&str>,
    layout: Layout,
) -> String {
    let payload_digest = push_blob(c, b, repo, payload).await;
    let config = format!(
        r#"{{"architecture":"","config":{{}},"os":"","rootfs":{{"type":"layers","diff_ids":["{payload_digest}"]}}}}"#
    );
    let config_digest = push_blob(c, b, repo, config.as_bytes()).await;
    let mut layer =
        json!({"mediaType": SIMPLE_SIGNING, "digest": payload_digest, "size": payload.len()});
    if let Some(signature) = annotation {
        layer["annotations"] = json!({ ANNOTATION: signature });
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [layer],
    });
    let reference = match layout {
        Layout::Tag => signature_tag(&image.digest),
        Layout::Referrer => {
            manifest["artifactType"] = json!(SIGNATURE_ARTIFACT);
            manifest["subject"] =
                json!({"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.size});
            sha256(&serde_json::to_vec(&manifest).unwrap())
        }
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = put_manifest(c, b, repo, &reference, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    sha256(&body)
}

/// Pushes a signature manifest with oras (its Python client), the payload
/// as the one layer and the signature as its annotation; with `subject`, as
/// a referrer. Returns what oras printed: status and digest.
fn oras_push_signature(
    target: &str,
    payload: &[u8],
    signature: &str,
    subject: Option<&Pushed>,
) -> String {
    const SCRIPT: &str = r#"
import sys, json, oras.client
target, signature = sys.argv[1:3]
subject = None
if len(sys.argv) > 3:
    from oras.oci import Subject
    subject = Subject(mediaType=sys.argv[3], digest=sys.argv[4], size=int(sys.argv[5]))
with open("annotations.json", "w") as f:
    json.dump({"payload.json": {"dev.cosignproject.cosign/signature": signature}}, f)
client = oras.client.OrasClient(insecure=True)
r = client.push(target=target, files=["payload.json:application/vnd.dev.cosign.simplesigning.v1+json"],
                annotation_file="annotations.json", subject=subject, quiet=True)
print(r.status_code, r.headers.get("Docker-Content-Digest"))
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload.json"), payload).unwrap();
    let mut cmd = Command::new(common::oras_python());
    cmd.arg("-c")
        .arg(SCRIPT)
        .args([target, signature])
        .current_dir(dir.path());
    if let Some(s) = subject {
        cmd.args([OCI_MANIFEST, &s.digest, &s.size.to_string()]);
    }
    let out = ok(&mut cmd);
    assert!(out.starts_with("201 "), "oras push: {out}");
    out
}

async fn get_manifest(c: &Client, b: &Berth, repo: &str, reference: &str) -> reqwest::Response {
    c.get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

/// Asserts a pull answered 200 with the manifest.
async fn served(c: &Client, b: &Berth, repo: &str, reference: &str) {
    let r = get_manifest(c, b, repo, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {repo}:{reference}: {r:?}");
    let r = c
        .head(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "HEAD {repo}:{reference}");
}

/// Asserts a pull was refused with 403 DENIED naming the image and the
/// policy, for a reason containing `why`; returns the reason.
async fn refused(c: &Client, b: &Berth, repo: &str, image: &Pushed, why: &str) -> String {
    let body = expect_error(
        get_manifest(c, b, repo, "v1").await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("{repo}@{}", image.digest)),
        "names the image: {message}"
    );
    assert!(
        message.contains("pull policy of namespace prod"),
        "names the policy: {message}"
    );
    let reason = body["errors"][0]["detail"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
    let r = c
        .head(b.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "HEAD {repo}:v1");
    reason
}

fn admin(b: &Berth, c: &Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    c.request(method, b.url(&format!("/admin/v1{path}")))
        .basic_auth("admin", Some(b.admin_password()))
}

async fn admin_get(b: &Berth, c: &Client, path: &str) -> Value {
    let r = admin(b, c, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}: {r:?}");
    r.json().await.unwrap()
}

async fn metric(c: &Client, b: &Berth, line_start: &str) -> String {
    let text = c
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
        .to_owned()
}

fn policy_config(keys: &[(&str, &KeyPair)], policy_keys: &str) -> String {
    let mut config = String::new();
    for (name, key) in keys {
        config += &format!(
            "[[signatures.keys]]\nname = \"{name}\"\npublic_key_file = \"{}\"\n\n",
            key.public.display()
        );
    }
    config + &format!("[[signatures.pull_policies]]\nnamespace = \"prod\"\nkeys = {policy_keys}\n")
}

#[tokio::test]
async fn protected_pulls_need_a_valid_signature_by_a_trusted_key() {
    let work = tempfile::tempdir().unwrap();
    let ci = KeyPair::generate(work.path(), "ci", Kind::Ecdsa);
    let stranger = KeyPair::generate(work.path(), "stranger", Kind::Ecdsa);
    let b = Berth::start_with_config(&policy_config(&[("ci", &ci)], r#"["ci"]"#));
    let c = Client::new();

    // Outside the protected namespace nothing changes.
    push_image_tagged(&c, &b, "dev/app", "v1").await;
    served(&c, &b, "dev/app", "v1").await;

    // Unsigned: refused, and counted.
    let unsigned = push_image_tagged(&c, &b, "prod/unsigned", "v1").await;
    refused(&c, &b, "prod/unsigned", &unsigned, "no signature").await;

    // Valid, in both layouts, each pushed by oras and over HTTP.
    for (i, layout) in [Layout::Tag, Layout::Referrer].into_iter().enumerate() {
        let repo = format!("prod/oras{i}");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        refused(&c, &b, &repo, &image, "no signature").await;
        let p = payload(&b, &repo, &image.digest);
        let (target, subject) = match layout {
            Layout::Tag => (signature_tag(&image.digest), None),
            Layout::Referrer => ("cosign-referrer".to_owned(), Some(&image)),
        };
        oras_push_signature(
            &format!("{}/{repo}:{target}", b.host),
            &p,
            &ci.sign(&p),
            subject,
        );
        served(&c, &b, &repo, "v1").await;
        served(&c, &b, &repo, &image.digest).await;

        let repo = format!("prod/http{i}");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let p = payload(&b, &repo, &image.digest);
        let signature = push_signature(&c, &b, &repo, &image, &p, Some(&ci.sign(&p)), layout).await;
        served(&c, &b, &repo, "v1").await;
        // The signature manifest itself stays pullable, so tools can verify.
        served(&c, &b, &repo, &signature).await;
        if let Layout::Tag = layout {
            served(&c, &b, &repo, &signature_tag(&image.digest)).await;
        }
        let r = c
            .get(b.url(&format!("/v2/{repo}/referrers/{}", image.digest)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Each bad signature, in each layout, refused with its own reason.
    for layout in [Layout::Tag, Layout::Referrer] {
        let name = |case: &str| format!("prod/{case}-{layout:?}").to_lowercase();

        let repo = name("stranger");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let p = payload(&b, &repo, &image.digest);
        push_signature(&c, &b, &repo, &image, &p, Some(&stranger.sign(&p)), layout).await;
        refused(&c, &b, &repo, &image, "does not verify over the payload").await;

        let repo = name("other-digest");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let other = push_image_tagged(&c, &b, &repo, "v2").await;
        let p = payload(&b, &repo, &other.digest);
        push_signature(&c, &b, &repo, &image, &p, Some(&ci.sign(&p)), layout).await;
        let reason = refused(&c, &b, &repo, &image, "names sha256:").await;
        assert!(
            reason.contains(&format!("names {}, not {}", other.digest, image.digest)),
            "{reason}"
        );

        let repo = name("tampered");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let p = payload(&b, &repo, &image.digest);
        let signature = ci.sign(&p);
        let altered = String::from_utf8(p)
            .unwrap()
            .replace(r#""optional":null"#, r#""optional":{"by":"someone else"}"#);
        push_signature(
            &c,
            &b,
            &repo,
            &image,
            altered.as_bytes(),
            Some(&signature),
            layout,
        )
        .await;
        refused(&c, &b, &repo, &image, "does not verify over the payload").await;

        let repo = name("no-annotation");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let p = payload(&b, &repo, &image.digest);
        push_signature(&c, &b, &repo, &image, &p, None, layout).await;
        refused(
            &c,
            &b,
            &repo,
            &image,
            "has no dev.cosignproject.cosign/signature annotation",
        )
        .await;

        let repo = name("not-base64");
        let image = push_image_tagged(&c, &b, &repo, "v1").await;
        let p = payload(&b, &repo, &image.digest);
        push_signature(
            &c,
            &b,
            &repo,
            &image,
            &p,
            Some("%%% not base64 %%%"),
            layout,
        )
        .await;
        refused(&c, &b, &repo, &image, "is not base64").await;
    }

    // A GET and a HEAD each time: 1 unsigned + 2 before oras signed + 5 bad
    // cases in 2 layouts.
    assert_eq!(
        metric(&c, &b, "berth_signature_refusals_total{namespace=\"prod\"}").await,
        "berth_signature_refusals_total{namespace=\"prod\"} 26"
    );
    let audit = admin_get(&b, &c, "/audit?limit=100").await;
    let refusals: Vec<&Value> = audit
        .as_array()
        .or(audit["entries"].as_array())
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "signature.refuse")
        .collect();
    assert_eq!(refusals.len(), 26, "{audit:#}");
    assert!(
        refusals
            .iter()
            .any(|a| a["target"] == format!("prod/unsigned@{}", unsigned.digest)),
        "{refusals:#?}"
    );

    // The admin API and the CLI say which manifests are signed, by what.
    let status = admin_get(&b, &c, "/repositories/prod%2Fhttp0/signatures").await;
    let rows = status.as_array().unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the signature manifest is no image: {status:#}"
    );
    assert_eq!(rows[0]["signed"], true, "{status:#}");
    assert_eq!(rows[0]["key"], "ci");
    let status = admin_get(&b, &c, "/repositories/prod%2Fstranger-tag/signatures").await;
    assert_eq!(status[0]["signed"], false, "{status:#}");
    assert!(
        status[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify")
    );
    let printed = cli(&b, &["signature", "status", "prod/http1"]);
    let row = printed
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(row.contains("true") && row.contains("ci"), "{printed}");
}

/// Runs `berth admin ARGS` against `b` as its admin.
fn cli(b: &Berth, args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    ok(Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("admin")
        .env("HOME", home.path())
        .env_remove("BERTH_URL")
        .env_remove("BERTH_USER")
        .env_remove("BERTH_PASSWORD")
        .env_remove("BERTH_ADMIN_CONFIG")
        .args(["--url", &b.url(""), "--user", "admin"])
        .args(["--password", &b.admin_password()])
        .args(args))
}

#[tokio::test]
async fn keys_rotate_through_the_admin_api() {
    let work = tempfile::tempdir().unwrap();
    let ci = KeyPair::generate(work.path(), "ci", Kind::Ecdsa);
    let rsa = KeyPair::generate(work.path(), "rsa", Kind::Rsa);
    let ed = KeyPair::generate(work.path(), "ed", Kind::Ed25519);
    let b = Berth::start_with_config(&policy_config(
        &[("ci", &ci)],
        r#"["ci", "ci-2026", "ci-ed"]"#,
    ));
    let c = Client::new();

    let signed = async |repo: &str, key: &KeyPair| {
        let image = push_image_tagged(&c, &b, repo, "v1").await;
        let p = payload(&b, repo, &image.digest);
        push_signature(&c, &b, repo, &image, &p, Some(&key.sign(&p)), Layout::Tag).await;
        image
    };
    let by_ci = signed("prod/by-ci", &ci).await;
    let by_rsa = signed("prod/by-rsa", &rsa).await;
    let by_ed = signed("prod/by-ed", &ed).await;
    served(&c, &b, "prod/by-ci", "v1").await;
    refused(&c, &b, "prod/by-rsa", &by_rsa, "does not verify").await;

    // A second and third key trusted: each key's images pass.
    let r = admin(&b, &c, reqwest::Method::POST, "/signatures/keys")
        .json(&json!({"name": "ci-2026", "public_key": rsa.public_pem()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let added: Value = r.json().await.unwrap();
    assert_eq!(added["algorithm"], "rsa");
    assert!(
        added["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let printed = cli(
        &b,
        &["signature", "add-key", "ci-ed", ed.public.to_str().unwrap()],
    );
    assert!(printed.contains("ed25519"), "{printed}");
    served(&c, &b, "prod/by-ci", "v1").await;
    served(&c, &b, "prod/by-rsa", "v1").await;
    served(&c, &b, "prod/by-ed", "v1").await;
    let keys = cli(&b, &["signature", "keys"]);
    for name in ["ci", "ci-2026", "ci-ed"] {
        assert!(
            keys.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{keys}"
        );
    }

    // Bad keys and names are refused; a config key cannot be removed here.
    let r = admin(&b, &c, reqwest::Method::POST, "/signatures/keys")
        .json(&json!({"name": "junk", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = admin(&b, &c, reqwest::Method::POST, "/signatures/keys")
        .json(&json!({"name": "ci", "public_key": rsa.public_pem()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = admin(&b, &c, reqwest::Method::DELETE, "/signatures/keys/ci")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // A removed key no longer counts, at once.
    let r = admin(&b, &c, reqwest::Method::DELETE, "/signatures/keys/ci-2026")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    refused(&c, &b, "prod/by-rsa", &by_rsa, "does not verify").await;
    served(&c, &b, "prod/by-ci", "v1").await;
    served(&c, &b, "prod/by-ed", "v1").await;
    let _ = (by_ci, by_ed);
}

#[test]
fn ctr_pulls_a_signed_image_from_a_protected_namespace() {
    let work = tempfile::tempdir().unwrap();
    let ci = KeyPair::generate(work.path(), "ci", Kind::Ecdsa);
    let b = Berth::start_with_config(&policy_config(&[("ci", &ci)], r#"["ci"]"#));
    let host = b.host.clone();

    let image = Image::generate(work.path(), "app", "1", 2, 3000);
    let unsigned = Image::generate(work.path(), "other", "1", 1, 3000);
    for (img, repo) in [(&image, "prod/app"), (&unsigned, "prod/other")] {
        ok(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(img.oci_ref())
            .arg(format!("docker://{host}/{repo}:1")));
    }
    let p = payload(&b, "prod/app", &image.manifest_digest);
    oras_push_signature(
        &format!("{host}/prod/app:{}", signature_tag(&image.manifest_digest)),
        &p,
        &ci.sign(&p),
        None,
    );

    let dir = short_tempdir();
    let containerd = Containerd::start(&dir.path().join("c"));
    ok(&mut containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        &format!("{host}/prod/app:1"),
    ]));
    let listed = ok(&mut containerd.ctr(&["images", "ls"]));
    assert!(listed.contains(&image.manifest_digest), "{listed}");

    let out = containerd
        .ctr(&[
            "images",
            "pull",
            "--plain-http",
            &format!("{host}/prod/other:1"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unsigned image pulled");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("403"), "ctr says: {said}");
}

// ---------------------------------------------------------------------------
// Deploy rules that require a signature
// ---------------------------------------------------------------------------

fn workloads(host: &str) -> String {
    let deployment = |name: &str| {
        format!(
            r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: {name}, namespace: apps }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: {name} }} }}
  template:
    metadata: {{ labels: {{ app: {name} }} }}
    spec:
      containers:
        - {{ name: {name}, image: "{host}/prod/{name}:0" }}
"#
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: apps }}\n{}{}",
        deployment("app"),
        deployment("never")
    )
}

fn deploys(b: &Berth) -> Vec<Value> {
    b.manage(&["deploys", "--json", "--limit", "100"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until berth has a deploy record of `rule` and `tag` that `done`
/// accepts.
fn wait_deploy(b: &Berth, rule: &str, tag: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = deploys(b);
        if let Some(d) = all
            .iter()
            .find(|d| d["rule"] == rule && d["tag"] == tag && done(d))
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no deploy of {rule}:{tag} as expected; records: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn container_image(deployment: &Value) -> String {
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn deploys_wait_for_the_signature_and_never_roll_unsigned_images() {
    let cluster = common::kube::Cluster::start();
    let work = tempfile::tempdir().unwrap();
    let ci = KeyPair::generate(work.path(), "ci", Kind::Ecdsa);
    let stranger = KeyPair::generate(work.path(), "stranger", Kind::Ecdsa);
    let kubeconfig = cluster.shipped_deployer_kubeconfig();
    let config = format!(
        r#"
[events]
first_backoff_seconds = 1
max_backoff_seconds = 2

[[signatures.keys]]
name = "ci"
public_key_file = "{}"

[deploy]
kubeconfig = "{}"

[[deploy.rules]]
name = "app"
repository = "prod/app"
require_signature = ["ci"]
signature_wait_seconds = 60
[[deploy.rules.targets]]
namespace = "apps"
name = "app"

[[deploy.rules]]
name = "never"
repository = "prod/never"
require_signature = ["ci"]
signature_wait_seconds = 4
[[deploy.rules.targets]]
namespace = "apps"
name = "never"
"#,
        ci.public.display(),
        kubeconfig.display()
    );
    let b = Berth::start_with_config(&config);
    let host = b.host.clone();
    cluster.apply(&workloads(&host));
    let c = Client::new();
    let current =
        |name: &str| container_image(&cluster.get_json(&["deployment", name, "-n", "apps"]));

    // 1. The push waits for its signature; pushed 5 s later (as a referrer),
    //    it triggers the rollout.
    let v1 = push_image_tagged(&c, &b, "prod/app", "1").await;
    let waiting = wait_deploy(&b, "app", "1", |d| d["state"] == "waiting_signature");
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("no signature"),
        "{waiting}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        current("app"),
        format!("{host}/prod/app:0"),
        "rolled unsigned"
    );
    let p = payload(&b, "prod/app", &v1.digest);
    push_signature(
        &c,
        &b,
        "prod/app",
        &v1,
        &p,
        Some(&ci.sign(&p)),
        Layout::Referrer,
    )
    .await;
    let pinned = format!("{host}/prod/app@{}", v1.digest);
    cluster.wait_for("app patched", &["deployment", "app", "-n", "apps"], |d| {
        container_image(d) == pinned
    });
    let signed = wait_deploy(&b, "app", "1", |d| d["state"] == "signed");
    assert!(
        signed["message"].as_str().unwrap().contains("signed by ci"),
        "{signed}"
    );
    wait_deploy(&b, "app", "1", |d| d["state"] == "succeeded");

    // 2. Signed right after the push (tag scheme): rolls as soon as it is.
    let v3 = push_image_tagged(&c, &b, "prod/app", "2").await;
    let p = payload(&b, "prod/app", &v3.digest);
    push_signature(&c, &b, "prod/app", &v3, &p, Some(&ci.sign(&p)), Layout::Tag).await;
    let pinned = format!("{host}/prod/app@{}", v3.digest);
    cluster.wait_for(
        "app patched to 2",
        &["deployment", "app", "-n", "apps"],
        |d| container_image(d) == pinned,
    );

    // 3. Never signed, or signed by an untrusted key: `unsigned` after
    //    signature_wait, with the reason; nothing rolls.
    push_image_tagged(&c, &b, "prod/never", "1").await;
    let bad = push_image_tagged(&c, &b, "prod/never", "2").await;
    let p = payload(&b, "prod/never", &bad.digest);
    push_signature(
        &c,
        &b,
        "prod/never",
        &bad,
        &p,
        Some(&stranger.sign(&p)),
        Layout::Tag,
    )
    .await;
    let unsigned = wait_deploy(&b, "never", "1", |d| d["state"] == "unsigned");
    let message = unsigned["message"].as_str().unwrap();
    assert!(
        message.contains("no valid signature by ci within 4s") && message.contains("no signature"),
        "{unsigned}"
    );
    let untrusted = wait_deploy(&b, "never", "2", |d| d["state"] == "unsigned");
    assert!(
        untrusted["message"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{untrusted}"
    );
    assert_eq!(current("never"), format!("{host}/prod/never:0"));
    // The admin API shows the same records.
    let listed = admin_get(&b, &c, "/deploys?rule=never").await;
    let listed = listed
        .as_array()
        .or(listed["deploys"].as_array())
        .unwrap()
        .clone();
    assert!(
        listed.iter().all(|d| d["state"] == "unsigned"),
        "{listed:#?}"
    );
    // The signature tag itself is no image to roll.
    assert!(
        deploys(&b)
            .iter()
            .all(|d| !d["tag"].as_str().unwrap_or("").ends_with(".sig")),
        "a signature tag was deployed"
    );
}
