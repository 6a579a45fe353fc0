#!/usr/bin/env python3
"""Times `skopeo copy` of fresh images (five layers: 1, 4, 16, 50 and
100 MiB) from an OCI layout on disk to a registry, and prints one JSON
object shaped like berth-bench's --json output, for compare.sh.

    skopeo_push.py URL PID COUNT WORKDIR

Each copy pushes new random layers into a new repository, so nothing is
deduplicated or mounted. The layout is written before the clock starts;
the server's CPU time and peak RSS (VmHWM, reset through clear_refs) are
read from /proc for PID around the copies.
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

LAYER_MIB = [1, 4, 16, 50, 100]


def write_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def make_layout(root, seed):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    rng = random.Random(seed)
    layers = []
    for mib in LAYER_MIB:
        d = write_blob(root, rng.randbytes(mib << 20))
        layers.append(dict(d, mediaType="application/vnd.oci.image.layer.v1.tar"))
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
    }).encode()
    cfg = dict(write_blob(root, config), mediaType="application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg, "layers": layers,
    }).encode()
    m = dict(write_blob(root, manifest), mediaType="application/vnd.oci.image.manifest.v1+json",
             annotations={"org.opencontainers.image.ref.name": "latest"})
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [m]}, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return sum(l["size"] for l in layers) + cfg["size"] + len(manifest)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main():
    url, pid, count, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    host = url.split("://", 1)[1]
    layout = os.path.join(work, "skopeo-layout")
    times, total, errors, cpu = [], 0, 0, 0.0
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    client0 = os.times()
    for i in range(count):
        size = make_layout(layout, f"{url}-{time.time_ns()}-{i}")
        repo = f"skopeo/run{time.time_ns()}"
        c0 = cpu_seconds(pid)
        t0 = time.monotonic()
        done = subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{layout}:latest", f"docker://{host}/{repo}:latest"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.monotonic() - t0)
        cpu += cpu_seconds(pid) - c0
        if done.returncode != 0:
            errors += 1
            print(done.stderr.strip(), file=sys.stderr)
        else:
            total += size
    client1 = os.times()
    shutil.rmtree(layout, ignore_errors=True)
    secs = sum(times)
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3
    print(json.dumps({
        "ops": count, "errors": errors, "secs": secs, "bytes": total,
        "ops_per_s": count / secs, "req_per_s": count / secs, "units_per_s": count / secs,
        "mb_per_s": total / secs / 1e6,
        "p50_ms": pick(0.5), "p99_ms": pick(0.99),
        "server_cpu_s": cpu, "server_peak_rss_kib": hwm_kib(pid),
        "client_cpu_s": (client1.children_user + client1.children_system)
        - (client0.children_user + client0.children_system),
    }))


if __name__ == "__main__":
    main()
