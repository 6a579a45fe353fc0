//! What a signature pull policy adds to a manifest GET: the cached verdict
//! lookup on top of the (memory-cached) manifest read, against the read
//! alone, and what a verification from scratch costs (a new key set: the
//! signature manifest and payload read, one ECDSA P-256 verify).
//!
//! Run: `cargo bench --bench signatures`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use berth::core::event::Origin;
use berth::core::names::{Digest, Reference, RepoName};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::{EncodePublicKey, LineEnding};

fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

fn protected_get(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let key_file = dir.path().join("ci.pub");
    std::fs::write(&key_file, pem).unwrap();
    let config: berth::config::Config = toml::from_str(&format!(
        "data_dir = \"{}\"\n[[signatures.keys]]\nname = \"ci\"\npublic_key_file = \"{}\"\n\
         [[signatures.pull_policies]]\nnamespace = \"prod\"\nkeys = [\"ci\"]\n",
        dir.path().display(),
        key_file.display()
    ))
    .unwrap();
    let app = runtime.block_on(berth::App::build(&config)).unwrap();
    let repo: RepoName = "prod/app".parse().unwrap();
    let origin = Origin::default();
    let push_blob = async |bytes: Vec<u8>| {
        let digest = digest_of(&bytes);
        let len = bytes.len() as u64;
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
        app.registry
            .push_blob(&repo, &digest, Some(len), body)
            .await
            .unwrap();
        digest
    };
    let tag = Reference::Tag("v1".parse().unwrap());
    runtime.block_on(async {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let config_digest = push_blob(config.clone()).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [],
        }))
        .unwrap();
        let image = app
            .registry
            .put_manifest(&repo, &tag, Some("application/vnd.oci.image.manifest.v1+json"), &manifest, &origin)
            .await
            .unwrap()
            .digest;
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/prod/app"}},"image":{{"docker-manifest-digest":"{image}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes();
        let signature: p256::ecdsa::Signature = key.sign(&payload);
        let signature = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
        };
        let payload_len = payload.len();
        let payload_digest = push_blob(payload).await;
        let signature_manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": payload_digest.to_string(),
                "size": payload_len,
                "annotations": {"dev.cosignproject.cosign/signature": signature},
            }],
        }))
        .unwrap();
        let sig_tag = Reference::Tag(
            format!("sha256-{}.sig", image.as_str().trim_start_matches("sha256:"))
                .parse()
                .unwrap(),
        );
        app.registry
            .put_manifest(&repo, &sig_tag, Some("application/vnd.oci.image.manifest.v1+json"), &signature_manifest, &origin)
            .await
            .unwrap();
    });
    let row = runtime
        .block_on(app.registry.get_manifest(&repo, &tag, None))
        .unwrap();
    runtime
        .block_on(app.signatures.check_pull(&repo, &tag, &row, &origin))
        .expect("the image is signed");

    let mut group = c.benchmark_group("protected manifest GET");
    group.bench_function("manifest read alone (memory)", |b| {
        b.to_async(&runtime)
            .iter(|| async { app.registry.get_manifest(&repo, &tag, None).await.unwrap() });
    });
    group.bench_function("manifest read + cached signature check", |b| {
        b.to_async(&runtime).iter(|| async {
            let row = app.registry.get_manifest(&repo, &tag, None).await.unwrap();
            app.signatures
                .check_pull(&repo, &tag, &row, &origin)
                .await
                .unwrap();
            row
        });
    });
    group.bench_function("signature check from scratch (new key set)", |b| {
        b.iter_batched(
            || runtime.block_on(app.signatures.reload()).unwrap(),
            |()| {
                runtime
                    .block_on(app.signatures.check_pull(&repo, &tag, &row, &origin))
                    .unwrap()
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, protected_get);
criterion_main!(benches);
