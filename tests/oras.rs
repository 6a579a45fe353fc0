//! ORAS (the Python client, PyPI `oras`) attaches an artifact to an image
//! through berth's referrers support, then pulls it back.

mod common;

use std::process::Command;

use common::Berth;
use serde_json::Value;

/// Runs a Python script with the oras client, in `dir`, and returns stdout.
fn python(dir: &std::path::Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(common::oras_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the oras venv's python (scripts/install-test-deps.sh makes it)");
    assert!(
        out.status.success(),
        "oras script failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const PUSH: &str = r#"
import sys, oras.client
target, path, media_type = sys.argv[1:4]
subject = None
if len(sys.argv) > 4:
    from oras.oci import Subject
    subject = Subject(mediaType=sys.argv[4], digest=sys.argv[5], size=int(sys.argv[6]))
client = oras.client.OrasClient(insecure=True)
r = client.push(target=target, files=[f"{path}:{media_type}"], subject=subject,
                manifest_annotations={"org.example.kind": media_type}, quiet=True)
print(r.status_code, r.headers.get("Docker-Content-Digest"))
"#;

const PULL: &str = r#"
import sys, oras.client
client = oras.client.OrasClient(insecure=True)
for f in client.pull(target=sys.argv[1], outdir=sys.argv[2]):
    print(f)
"#;

#[tokio::test]
async fn oras_attaches_an_artifact_to_an_image() {
    let b = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(dir.join("app.txt"), b"the application").unwrap();
    std::fs::write(dir.join("sbom.json"), br#"{"packages":["berth-test"]}"#).unwrap();

    let image = format!("{}/team/app:v1", b.host);
    let out = python(
        dir,
        PUSH,
        &[&image, "app.txt", "application/vnd.example.app"],
    );
    assert!(out.starts_with("201 "), "push of the image: {out}");

    let c = reqwest::Client::new();
    let r = c
        .get(b.url("/v2/team/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let subject_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let subject_digest = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let subject_size = r.bytes().await.unwrap().len().to_string();

    // Attach the SBOM to the image, as `oras attach` does.
    let sbom = format!("{}/team/app:sbom", b.host);
    let out = python(
        dir,
        PUSH,
        &[
            &sbom,
            "sbom.json",
            "application/vnd.example.sbom",
            &subject_type,
            &subject_digest,
            &subject_size,
        ],
    );
    let sbom_digest = out
        .split_whitespace()
        .nth(1)
        .expect("digest printed")
        .to_owned();
    assert!(out.starts_with("201 "), "push of the sbom: {out}");

    let r = c
        .get(b.url(&format!("/v2/team/app/referrers/{subject_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index: Value = r.json().await.unwrap();
    let referrers = index["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{index}");
    assert_eq!(referrers[0]["digest"], sbom_digest);
    assert_eq!(
        referrers[0]["annotations"]["org.example.kind"],
        "application/vnd.example.sbom"
    );
    // oras-py sets no artifactType, so the config's media type stands in.
    assert!(referrers[0]["artifactType"].is_string(), "{index}");

    // And the artifact pulls back byte for byte.
    let out_dir = dir.join("pulled");
    let pulled = python(dir, PULL, &[&sbom, out_dir.to_str().unwrap()]);
    assert!(pulled.contains("sbom.json"), "{pulled}");
    assert_eq!(
        std::fs::read(out_dir.join("sbom.json")).unwrap(),
        br#"{"packages":["berth-test"]}"#
    );
}
