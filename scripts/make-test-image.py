#!/usr/bin/env python3
"""Build a throw-away multi-layer container image from nothing (stdlib only).

Writes an OCI image layout (oci-layout, index.json, blobs/sha256/...) whose
layers are gzip'ed tars of random content, so every run yields fresh digests.
Optionally also writes:
  --docker-archive FILE  a `docker save`-style tarball (manifest.json,
                         repositories, <config>.json, <id>/layer.tar) that
                         `docker load` and `podman load` accept;
  --oci-archive FILE     the OCI layout as a tar (`podman load`,
                         `ctr images import`, `skopeo copy oci-archive:FILE`,
                         docker >= 25 `docker load`; docker 20.10 rejects it).
Both archives name the image --ref (default test/image:TAG).

Usage:
  make-test-image.py OUT_DIR --layers N --layer-size BYTES [--tag TAG]
                     [--ref NAME:TAG] [--docker-archive FILE]
                     [--oci-archive FILE] [--label K=V]... [--annotation K=V]...

OUT_DIR is used as `oci:OUT_DIR:TAG` by skopeo.  Manifests use OCI media
types (skopeo 1.9's oci: transport ignores index entries with Docker media
types); to get a Docker schema2 manifest in the registry push with
`skopeo copy --format v2s2` (without --preserve-digests, which would make
skopeo silently keep OCI) or via docker/podman from --docker-archive.

A JSON summary (manifest digest, config digest, layer digests/diff_ids/sizes)
is printed on stdout.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time

MT = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
FIXED_MTIME = 1700000000


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer_tar(index, size, files_per_layer=3):
    """Uncompressed tar holding a directory with a few random files plus a text file.

    `size` bytes of random data are split across `files_per_layer` files.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = FIXED_MTIME
            tar.addfile(ti)

        def add_file(name, data, mode=0o644):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = FIXED_MTIME
            tar.addfile(ti, io.BytesIO(data))

        d = "layer%d" % index
        add_dir(d)
        nonce = os.urandom(16).hex()
        add_file("%s/info.txt" % d, ("layer %d nonce %s\n" % (index, nonce)).encode())
        remaining = size
        for f in range(files_per_layer):
            chunk = remaining // (files_per_layer - f)
            remaining -= chunk
            add_file("%s/data%d.bin" % (d, f), os.urandom(chunk))
        if index == 0:
            add_dir("etc")
            add_file("etc/hostname", b"test-image\n")
    return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    # mtime=0 + no filename => the gzip stream depends only on the input
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def write_blob(out_dir, data):
    digest = sha256(data)
    path = os.path.join(out_dir, "blobs", "sha256", digest.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return digest


def add_bytes(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = FIXED_MTIME
    tar.addfile(ti, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--layer-size", type=int, default=64 * 1024,
                    help="bytes of random (incompressible) data per layer")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--ref", default=None,
                    help="image name for --docker-archive RepoTags (default test/image:TAG)")
    ap.add_argument("--docker-archive", default=None)
    ap.add_argument("--oci-archive", default=None)
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                    help="a label in the image config (repeatable)")
    ap.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                    help="an annotation on the manifest (repeatable)")
    args = ap.parse_args()
    if args.layers < 1:
        ap.error("--layers must be >= 1")

    mt = MT
    out = args.out_dir
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    raw_layers = []
    layers = []
    for i in range(args.layers):
        raw = make_layer_tar(i, args.layer_size)
        gz = gzip_bytes(raw)
        digest = write_blob(out, gz)
        raw_layers.append(raw)
        layers.append({"digest": digest, "size": len(gz), "diff_id": sha256(raw)})

    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": dict([("org.example.test-nonce", os.urandom(8).hex())]
                           + [tuple(l.split("=", 1)) for l in args.label]),
        },
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created": created, "created_by": "make-test-image.py layer %d" % i}
                    for i in range(args.layers)],
    }
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_digest = write_blob(out, config_bytes)

    manifest = {
        "schemaVersion": 2,
        "mediaType": mt["manifest"],
        "config": {"mediaType": mt["config"], "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": mt["layer"], "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    if args.annotation:
        manifest["annotations"] = dict(tuple(a.split("=", 1)) for a in args.annotation)
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    manifest_digest = write_blob(out, manifest_bytes)

    # index.json: replace an existing entry with the same tag, keep others.
    index_path = os.path.join(out, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [m for m in index.get("manifests", [])
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != args.tag]
    index["manifests"].append({
        "mediaType": mt["manifest"],
        "digest": manifest_digest,
        "size": len(manifest_bytes),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"org.opencontainers.image.ref.name": args.tag},
    })
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    ref = args.ref or ("test/image:%s" % args.tag)
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        name, tag = ref, "latest"

    if args.oci_archive:
        with tarfile.open(args.oci_archive, "w") as tar:
            add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            # In the archive the ref.name annotation holds the full NAME:TAG so that
            # `podman load` / `ctr images import` name the image; docker >= 25 reads
            # io.containerd.image.name.  Use `skopeo copy oci-archive:FILE` (no tag).
            entry = dict(index["manifests"][-1])
            first = name.split("/")[0]
            if "/" in name and ("." in first or ":" in first or first == "localhost"):
                full = name
            else:
                full = "docker.io/" + (name if "/" in name else "library/" + name)
            entry["annotations"] = {"org.opencontainers.image.ref.name": "%s:%s" % (name, tag),
                                    "io.containerd.image.name": "%s:%s" % (full, tag)}
            one_index = {"schemaVersion": 2, "manifests": [entry]}
            add_bytes(tar, "index.json", json.dumps(one_index, indent=2).encode())
            for blob in [manifest_digest, config_digest] + [l["digest"] for l in layers]:
                h = blob.split(":", 1)[1]
                with open(os.path.join(out, "blobs", "sha256", h), "rb") as f:
                    add_bytes(tar, "blobs/sha256/" + h, f.read())

    if args.docker_archive:
        config_hex = config_digest.split(":", 1)[1]
        with tarfile.open(args.docker_archive, "w") as tar:
            add_bytes(tar, config_hex + ".json", config_bytes)
            layer_paths = []
            parent = ""
            for raw, l in zip(raw_layers, layers):
                # legacy v1 layer id: chain of diff_ids (any unique hex works)
                lid = hashlib.sha256((parent + " " + l["diff_id"]).encode()).hexdigest()
                ti = tarfile.TarInfo(lid)
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                ti.mtime = FIXED_MTIME
                tar.addfile(ti)
                add_bytes(tar, lid + "/VERSION", b"1.0")
                add_bytes(tar, lid + "/json", json.dumps({"id": lid, "parent": parent} if parent else {"id": lid}).encode())
                add_bytes(tar, lid + "/layer.tar", raw)
                layer_paths.append(lid + "/layer.tar")
                parent = lid
            dm = [{"Config": config_hex + ".json", "RepoTags": ["%s:%s" % (name, tag)], "Layers": layer_paths}]
            add_bytes(tar, "manifest.json", json.dumps(dm).encode())
            add_bytes(tar, "repositories", json.dumps({name: {tag: parent}}).encode())

    json.dump({
        "tag": args.tag,
        "manifest_digest": manifest_digest,
        "manifest_size": len(manifest_bytes),
        "media_type": mt["manifest"],
        "config_digest": config_digest,
        "layers": layers,
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
