//! End-to-end tests with the real OCI clients people point at a registry:
//! skopeo, podman, containerd (`ctr`) and docker.
//!
//! Every test starts its own berth and, where it needs one, its own private
//! containerd or dockerd on sockets in a short temporary directory, with all
//! of the client's state kept in that directory. Daemons are stopped by Drop
//! guards, so they go away even when an assertion fails.
//!
//! The clients must be installed (`scripts/install-test-deps.sh`); a missing
//! tool fails the test with a message saying so. Image fixtures come from
//! `scripts/make-test-image.py`, which writes fresh random layers each run.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::fs;
use std::process::Command;

use clients::{
    Containerd, DOCKER_MANIFEST, Docker, Image, OCI_MANIFEST, Podman, RemoveIfCreated, hex_of,
    layout_blob, media_type, ok, pushed_digest, read, served_manifest, short_tempdir,
};
use common::Berth;
use serde_json::Value;

/// Pushes `image` to `docker://<dest>` with skopeo, keeping its digests.
fn skopeo_push_preserving(image: &Image, dest: &str) {
    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &image.oci_ref(),
        &format!("docker://{dest}"),
    ]));
}

/// Pushes `image` to `docker://<dest>` converted to a Docker schema2 manifest.
fn skopeo_push_v2s2(image: &Image, dest: &str) {
    ok(Command::new("skopeo").args([
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &image.oci_ref(),
        &format!("docker://{dest}"),
    ]));
}

// ---------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------

#[test]
fn skopeo_round_trips_oci_and_docker_schema2_images() {
    let work = short_tempdir();
    let berth = Berth::start();
    let image = Image::generate(work.path(), "img", "v1", 4, 10_000_000);
    let repo = "team/sub/image";
    let remote = format!("{}/{repo}", berth.host);

    // OCI, digests preserved: out and back byte for byte.
    skopeo_push_preserving(&image, &format!("{remote}:v1"));
    let back = work.path().join("back");
    ok(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{remote}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]));
    let index: Value = serde_json::from_slice(&read(&back.join("index.json"))).unwrap();
    let pulled: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests in index.json")
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        pulled,
        [image.manifest_digest.as_str()],
        "pulled index.json: {index}"
    );
    for digest in image.blobs() {
        let original = read(&layout_blob(&image.layout, digest));
        let copy = read(&layout_blob(&back, digest));
        assert_eq!(common::sha256(&copy), digest, "pulled blob {digest}");
        assert!(
            original == copy,
            "pulled blob {digest} differs from the pushed one"
        );
    }
    let mut pulled_blobs: Vec<String> = fs::read_dir(back.join("blobs/sha256"))
        .unwrap()
        .map(|entry| format!("sha256:{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    pulled_blobs.sort();
    let mut expected_blobs: Vec<String> = image.blobs().iter().map(|d| d.to_string()).collect();
    expected_blobs.sort();
    assert_eq!(pulled_blobs, expected_blobs, "blobs in the pulled layout");

    let served = served_manifest(&berth, repo, "v1");
    assert_eq!(served.digest, image.manifest_digest);
    assert_eq!(served.content_type, OCI_MANIFEST);
    assert!(served.body == read(&layout_blob(&image.layout, &image.manifest_digest)));

    // Converted to Docker schema2 on push; pulled with the dir: transport,
    // which keeps the manifest exactly as the registry served it.
    skopeo_push_v2s2(&image, &format!("{remote}:v2s2"));
    let dir = work.path().join("v2s2");
    ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{remote}:v2s2"),
        &format!("dir:{}", dir.display()),
    ]));
    let manifest = read(&dir.join("manifest.json"));
    assert_eq!(
        media_type(&manifest),
        DOCKER_MANIFEST,
        "pulled manifest: {}",
        String::from_utf8_lossy(&manifest)
    );
    let served = served_manifest(&berth, repo, "v2s2");
    assert_eq!(served.content_type, DOCKER_MANIFEST);
    assert_eq!(served.digest, common::sha256(&manifest));
    assert_ne!(served.digest, image.manifest_digest);
    let parsed: Value = serde_json::from_slice(&manifest).unwrap();
    let layers: Vec<&str> = parsed["layers"]
        .as_array()
        .expect("layers in manifest")
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(layers, image.layers, "layers are not recompressed");
    for digest in &image.layers {
        assert!(
            read(&dir.join(hex_of(digest))) == read(&layout_blob(&image.layout, digest)),
            "layer {digest} pulled from the v2s2 tag differs"
        );
    }
    let config = parsed["config"]["digest"].as_str().expect("config digest");
    assert_eq!(
        common::sha256(&read(&dir.join(hex_of(config)))),
        config,
        "config blob pulled from the v2s2 tag"
    );
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

#[test]
fn podman_push_and_pull_keep_the_image_id() {
    let work = short_tempdir();
    let berth = Berth::start();
    let image = Image::generate(work.path(), "pod", "v1", 3, 2_000_000);
    let podman = Podman::new(&work.path().join("podman"));
    let config_hex = hex_of(&image.config_digest);
    let remote = format!("{}/team/podman:v1", berth.host);

    let archive = image.docker_archive.to_str().unwrap();
    ok(&mut podman.cmd(&["load", "-i", archive]));
    ok(&mut podman.cmd(&["tag", config_hex, &remote]));
    let digest_file = work.path().join("pushed-digest");
    ok(&mut podman.cmd(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digest_file.to_str().unwrap(),
        &remote,
    ]));
    let pushed = fs::read_to_string(&digest_file).unwrap();
    let served = served_manifest(&berth, "team/podman", "v1");
    assert_eq!(served.digest, pushed.trim(), "digest podman pushed");
    let manifest: Value = serde_json::from_slice(&served.body).unwrap();
    assert_eq!(
        manifest["config"]["digest"], image.config_digest,
        "served manifest: {manifest}"
    );

    ok(&mut podman.cmd(&["rmi", "-a", "-f"]));
    let left = ok(&mut podman.cmd(&["images", "-q"]));
    assert!(left.trim().is_empty(), "images left after rmi: {left}");

    ok(&mut podman.cmd(&["pull", "--tls-verify=false", &remote]));
    let id = ok(&mut podman.cmd(&["image", "inspect", "--format", "{{.Id}}", &remote]));
    assert_eq!(id.trim(), config_hex, "pulled image ID");
    let digests = ok(&mut podman.cmd(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &remote,
    ]));
    let expected = format!("{}/team/podman@{}", berth.host, served.digest);
    assert!(
        digests.contains(&expected),
        "RepoDigests {digests} lack {expected}"
    );
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

#[test]
fn containerd_pulls_oci_and_docker_schema2_images() {
    let work = short_tempdir();
    let berth = Berth::start();
    let image = Image::generate(work.path(), "ctr", "v1", 3, 2_000_000);
    let repo = "team/ctr";
    let remote = format!("{}/{repo}", berth.host);
    skopeo_push_preserving(&image, &format!("{remote}:v1"));
    skopeo_push_v2s2(&image, &format!("{remote}:v2s2"));
    let oci = served_manifest(&berth, repo, "v1");
    assert_eq!(oci.digest, image.manifest_digest);
    assert_eq!(oci.content_type, OCI_MANIFEST);
    let docker = served_manifest(&berth, repo, "v2s2");
    assert_eq!(docker.content_type, DOCKER_MANIFEST);

    let containerd = Containerd::start(&work.path().join("c"));
    containerd.pull_and_check(&format!("{remote}:v1"), &oci, &image);
    containerd.pull_and_check(&format!("{remote}:v2s2"), &docker, &image);

    // And back: containerd pushes the manifest it holds byte for byte.
    let copy = format!("{}/team/ctr-copy:v1", berth.host);
    ok(&mut containerd.ctr(&["images", "tag", &format!("{remote}:v1"), &copy]));
    ok(&mut containerd.ctr(&["images", "push", "--plain-http", &copy]));
    let pushed = served_manifest(&berth, "team/ctr-copy", "v1");
    assert_eq!(pushed.digest, image.manifest_digest);
    assert!(pushed.body == oci.body);
}

// ---------------------------------------------------------------------------
// docker
// ---------------------------------------------------------------------------

#[test]
fn docker_push_mount_and_pull() {
    let work = short_tempdir();
    let berth = Berth::start();
    let image = Image::generate(work.path(), "dk", "v1", 3, 2_000_000);
    // dockerd creates /run/docker/plugins whatever its --exec-root is.
    let _created = RemoveIfCreated::new(&["/run/docker/plugins", "/run/docker"]);
    let docker = Docker::start(&work.path().join("d"));
    let first = format!("{}/team/docker:v1", berth.host);
    let second = format!("{}/team/docker2:v1", berth.host);

    ok(&mut docker.cmd(&["load", "-i", image.docker_archive.to_str().unwrap()]));
    ok(&mut docker.cmd(&["tag", "test/dk:v1", &first]));
    let out = ok(&mut docker.cmd(&["push", &first]));
    let served = served_manifest(&berth, "team/docker", "v1");
    assert_eq!(
        pushed_digest(&out),
        served.digest,
        "docker push output:\n{out}"
    );
    assert_eq!(served.content_type, DOCKER_MANIFEST);

    // The same layers into another repository: docker mounts them from the
    // first one (POST /v2/team/docker2/blobs/uploads/?mount=...&from=team/docker).
    ok(&mut docker.cmd(&["tag", "test/dk:v1", &second]));
    let out = ok(&mut docker.cmd(&["push", &second]));
    assert!(
        out.contains("Mounted from team/docker"),
        "docker push output:\n{out}"
    );
    assert_eq!(
        served_manifest(&berth, "team/docker2", "v1").digest,
        served.digest,
        "docker push output:\n{out}"
    );

    ok(&mut docker.cmd(&["rmi", "-f", &image.config_digest]));
    let left = ok(&mut docker.cmd(&["images", "-q"]));
    assert!(left.trim().is_empty(), "images left after rmi: {left}");

    ok(&mut docker.cmd(&["pull", &first]));
    assert_eq!(docker.inspect(&first, "{{.Id}}"), image.config_digest);
    let digests = docker.inspect(&first, "{{json .RepoDigests}}");
    let expected = format!("{}/team/docker@{}", berth.host, served.digest);
    assert!(
        digests.contains(&expected),
        "RepoDigests {digests} lack {expected}"
    );
}
