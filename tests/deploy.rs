//! Push to deploy against a real Kubernetes API server (built from Debian's
//! source package and run node-less by scripts/kube-test-cluster.sh): skopeo
//! pushes, the Deployment following the image is patched to the pushed
//! digest with the RBAC shipped in deploy/, a ReplicaSet for it appears, and
//! berth records what happened. Also each failure a user meets: a tag older
//! than deployed, a failed rollout rolled back, a target that does not
//! exist, RBAC forbidding the patch, and the API server down during a push.
//!
//! With no nodes, pods stay Pending: a Deployment of 0 replicas completes
//! its rollout, one of 1 never does.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clients::{Image, ok};
use common::Berth;
use common::kube::Cluster;
use serde_json::Value;

const NAMESPACE: &str = "apps";

fn skopeo_push(image: &Image, dest: &str) {
    ok(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(image.oci_ref())
        .arg(format!("docker://{dest}")));
}

fn workloads(host: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: {NAMESPACE} }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: app, namespace: {NAMESPACE} }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: app }} }}
  template:
    metadata: {{ labels: {{ app: app }} }}
    spec:
      containers:
        - {{ name: app, image: "{host}/team/app:1.0.0" }}
        - {{ name: proxy, image: "envoy:1" }}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{ name: db, namespace: {NAMESPACE} }}
spec:
  replicas: 0
  serviceName: db
  selector: {{ matchLabels: {{ app: db }} }}
  template:
    metadata: {{ labels: {{ app: db }} }}
    spec:
      containers:
        - {{ name: db, image: "{host}/team/infra:0" }}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{ name: agent, namespace: {NAMESPACE} }}
spec:
  selector: {{ matchLabels: {{ app: agent }} }}
  template:
    metadata: {{ labels: {{ app: agent }} }}
    spec:
      containers:
        - {{ name: agent, image: "{host}/team/infra:0" }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: gated, namespace: {NAMESPACE} }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: gated }} }}
  template:
    metadata: {{ labels: {{ app: gated }} }}
    spec:
      containers:
        - {{ name: gated, image: "{host}/team/gated:0" }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: web, namespace: {NAMESPACE}, labels: {{ app: web }} }}
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      containers:
        - {{ name: web, image: "{host}/team/web:0.9" }}
"#
    )
}

/// A smoke test that no node will ever run: it fails on its deadline
/// unless the test marks it complete first.
const SMOKE_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {}
spec:
  activeDeadlineSeconds: 5
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: smoke
          image: $IMAGE
          args: ["--self-test"]
"#;

fn berth_config(kubeconfig: &Path) -> String {
    let smoke = kubeconfig.with_file_name("smoke-job.yaml");
    std::fs::write(&smoke, SMOKE_JOB).unwrap();
    format!(
        r#"
[events]
first_backoff_seconds = 1
max_backoff_seconds = 2

[deploy]
kubeconfig = "{}"

[[deploy.rules]]
name = "app"
repository = "team/app"
semver = "^1.2"
timeout_seconds = 60
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
name = "app"

[[deploy.rules]]
name = "web"
repository = "team/web"
rollback_on_failure = true
timeout_seconds = 60
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
selector = "app=web"

[[deploy.rules]]
name = "infra"
repository = "team/infra"
timeout_seconds = 60
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
kind = "StatefulSet"
name = "db"
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
kind = "DaemonSet"
name = "agent"

[[deploy.rules]]
name = "gated"
repository = "team/gated"
smoke_job = "{}"
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
name = "gated"

[[deploy.rules]]
name = "ghost"
repository = "team/ghost"
[[deploy.rules.targets]]
namespace = "{NAMESPACE}"
name = "ghost"
"#,
        kubeconfig.display(),
        smoke.display()
    )
}

fn deploys(b: &Berth) -> Vec<Value> {
    b.manage(&["deploys", "--json", "--limit", "100"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until berth has a deploy record for `rule` (and `tag`) that
/// `done` accepts; returns it.
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

fn container_image(deployment: &Value, container: &str) -> String {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn pushes_roll_deployments_onto_the_pushed_digest() {
    let cluster = Cluster::start();
    let work = tempfile::tempdir().unwrap();
    // berth acts with exactly the rights deploy/rbac.yaml grants.
    let kubeconfig = cluster.shipped_deployer_kubeconfig();
    let mut b = Berth::start_with_config(&berth_config(&kubeconfig));
    let host = b.host.clone();
    cluster.apply(&workloads(&host));

    // 1. A matching push rolls the Deployment onto the pushed digest.
    let v124 = Image::generate(work.path(), "app124", "1.2.4", 1, 2000);
    skopeo_push(&v124, &format!("{host}/team/app:1.2.4"));
    let pinned = format!("{host}/team/app@{}", v124.manifest_digest);
    let app = cluster.wait_for(
        "app patched",
        &["deployment", "app", "-n", NAMESPACE],
        |d| container_image(d, "app") == pinned,
    );
    assert_eq!(
        container_image(&app, "proxy"),
        "envoy:1",
        "other containers stay"
    );
    assert_eq!(app["metadata"]["annotations"]["berth.dev/tag"], "1.2.4");
    let managers = app["metadata"]["managedFields"].to_string();
    assert!(managers.contains("\"berth\""), "field manager: {managers}");
    cluster.wait_for(
        "a ReplicaSet of the digest",
        &["replicasets", "-n", NAMESPACE],
        |list| {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rs| container_image(rs, "app") == pinned)
        },
    );
    let record = wait_deploy(&b, "app", "1.2.4", |d| d["state"] == "succeeded");
    assert_eq!(record["old_image"], format!("{host}/team/app:1.0.0"));
    assert_eq!(record["new_image"], pinned);
    assert_eq!(record["namespace"], NAMESPACE);
    assert_eq!(record["container"], "app");
    assert!(record["finished_at"].as_str().is_some(), "{record}");

    // 2. A semver-older tag does not roll back what is deployed.
    let v123 = Image::generate(work.path(), "app123", "1.2.3", 1, 2000);
    skopeo_push(&v123, &format!("{host}/team/app:1.2.3"));
    let skipped = wait_deploy(&b, "app", "1.2.3", |d| d["state"] == "skipped");
    assert!(
        skipped["message"].as_str().unwrap().contains("older"),
        "{skipped}"
    );
    let app = cluster.get_json(&["deployment", "app", "-n", NAMESPACE]);
    assert_eq!(container_image(&app, "app"), pinned);

    // 3. A tag outside the rule's range is no deploy at all.
    let v200 = Image::generate(work.path(), "app200", "2.0.0", 1, 2000);
    skopeo_push(&v200, &format!("{host}/team/app:2.0.0"));

    // 4. A rollout that fails (no node can run the pod) is rolled back.
    let web = Image::generate(work.path(), "web1", "1", 1, 2000);
    skopeo_push(&web, &format!("{host}/team/web:1"));
    let rolled = wait_deploy(&b, "web", "1", |d| d["state"] == "rolled_back");
    assert!(
        rolled["message"].as_str().unwrap().contains("deadline"),
        "{rolled}"
    );
    cluster.wait_for(
        "web rolled back",
        &["deployment", "web", "-n", NAMESPACE],
        |d| container_image(d, "web") == format!("{host}/team/web:0.9"),
    );

    // 4b. StatefulSets and DaemonSets roll the same way.
    let infra = Image::generate(work.path(), "infra1", "1", 1, 2000);
    skopeo_push(&infra, &format!("{host}/team/infra:1"));
    let pinned_infra = format!("{host}/team/infra@{}", infra.manifest_digest);
    for (kind, name) in [("statefulset", "db"), ("daemonset", "agent")] {
        cluster.wait_for(
            &format!("{kind} {name} patched"),
            &[kind, name, "-n", NAMESPACE],
            |w| container_image(w, name) == pinned_infra,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = deploys(&b);
        let done: Vec<&Value> = all
            .iter()
            .filter(|d| d["rule"] == "infra" && d["state"] == "succeeded")
            .collect();
        if done.len() == 2 {
            let kinds: Vec<&str> = done.iter().map(|d| d["kind"].as_str().unwrap()).collect();
            assert!(
                kinds.contains(&"StatefulSet") && kinds.contains(&"DaemonSet"),
                "{kinds:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "infra rollouts did not finish: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // 5. A target that does not exist: recorded, and retried.
    let ghost = Image::generate(work.path(), "ghost", "1", 1, 2000);
    skopeo_push(&ghost, &format!("{host}/team/ghost:1"));
    let failed = wait_deploy(&b, "ghost", "1", |d| d["state"] == "failed");
    assert!(
        failed["message"].as_str().unwrap().contains("not found"),
        "{failed}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempts = deploys(&b).iter().filter(|d| d["rule"] == "ghost").count();
        if attempts >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ghost deploy was not retried"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = b.manage(&["deliveries"]);
    assert!(
        log.lines()
            .any(|l| l.contains("deploy:ghost") && l.contains("pending")),
        "{log}"
    );

    // 6. A smoke-test Job gates the rollout: one that fails stops it, one
    //    that succeeds lets it go ahead.
    let bad = Image::generate(work.path(), "gated1", "1", 1, 2000);
    skopeo_push(&bad, &format!("{host}/team/gated:1"));
    let failed = wait_deploy(&b, "gated", "1", |d| d["state"] == "failed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("smoke-test Job"),
        "{failed}"
    );
    let jobs = cluster.get_json(&["jobs", "-n", NAMESPACE, "-l", "berth.dev/rule=gated"]);
    let job = &jobs["items"][0];
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{host}/team/gated@{}", bad.manifest_digest),
        "the Job tests the pushed digest"
    );
    let gated = cluster.get_json(&["deployment", "gated", "-n", NAMESPACE]);
    assert_eq!(
        container_image(&gated, "gated"),
        format!("{host}/team/gated:0")
    );

    let good = Image::generate(work.path(), "gated2", "2", 1, 2000);
    skopeo_push(&good, &format!("{host}/team/gated:2"));
    let job_name = format!("berth-gated-{}", &good.manifest_digest[7..19]);
    cluster.wait_for("the smoke-test Job", &["jobs", "-n", NAMESPACE], |list| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["metadata"]["name"] == job_name.as_str())
    });
    // No node runs it, so the test stands in for the Job controller.
    mark_job_complete(&cluster, &job_name);
    let pinned_gated = format!("{host}/team/gated@{}", good.manifest_digest);
    cluster.wait_for(
        "gated patched",
        &["deployment", "gated", "-n", NAMESPACE],
        |d| container_image(d, "gated") == pinned_gated,
    );
    wait_deploy(&b, "gated", "2", |d| d["state"] == "succeeded");

    // 7. The API server is down when the push comes: the deploy fails,
    //    is retried, and goes through once the server is back, even
    //    across a berth restart.
    let stopped = cluster.stop_apiserver();
    let v125 = Image::generate(work.path(), "app125", "1.2.5", 1, 2000);
    skopeo_push(&v125, &format!("{host}/team/app:1.2.5"));
    wait_deploy(&b, "app", "1.2.5", |d| d["state"] == "failed");
    b.restart();
    stopped.resume(&cluster);
    let pinned125 = format!("{host}/team/app@{}", v125.manifest_digest);
    cluster.wait_for(
        "app patched after the outage",
        &["deployment", "app", "-n", NAMESPACE],
        |d| container_image(d, "app") == pinned125,
    );
    wait_deploy(&b, "app", "1.2.5", |d| d["state"] == "succeeded");

    // 8. Rolling back by hand puts the image before the last rollout back,
    //    and a given digest on request; both are recorded.
    let out = b.manage(&["rollback", "app"]);
    assert!(out.contains("rolled back by hand"), "{out}");
    let app = cluster.get_json(&["deployment", "app", "-n", NAMESPACE]);
    assert_eq!(container_image(&app, "app"), pinned, "back on 1.2.4");
    let to = &v125.manifest_digest;
    b.manage(&["rollback", "app", "--to", to]);
    let app = cluster.get_json(&["deployment", "app", "-n", NAMESPACE]);
    assert_eq!(container_image(&app, "app"), pinned125);
    let records = deploys(&b);
    let rollbacks: Vec<&Value> = records
        .iter()
        .filter(|d| d["state"] == "rolled_back" && d["rule"] == "app")
        .collect();
    assert_eq!(rollbacks.len(), 2, "{records:#?}");
    assert_eq!(rollbacks[0]["new_image"], pinned125);
    assert_eq!(rollbacks[1]["new_image"], pinned);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["rollback", "nope", "--data-dir"])
        .arg(b.data_dir())
        .arg("--config")
        .arg(b.data_dir().join("config.toml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no deploy rule named"));
}

/// Sets a Job's Complete condition through the status subresource, as the
/// Job controller would once its pod succeeded.
fn mark_job_complete(cluster: &Cluster, name: &str) {
    let url = format!(
        "{}/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status",
        cluster.var("KUBE_APISERVER")
    );
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let patch = serde_json::json!({ "status": {
        "succeeded": 1,
        "completionTime": now,
        "conditions": [{ "type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now }]
    }});
    ok(Command::new("curl")
        .args(["-sSf", "-X", "PATCH", "--cacert", cluster.var("KUBE_CA")])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", cluster.var("KUBE_TOKEN")),
        ])
        .args(["-H", "Content-Type: application/merge-patch+json"])
        .args(["--data", &patch.to_string(), &url]));
}

#[test]
fn rbac_forbidding_the_patch_is_a_recorded_failure() {
    let cluster = Cluster::start();
    let work = tempfile::tempdir().unwrap();
    // The "limited" user may authenticate but has no RBAC bindings.
    let kubeconfig = Path::new(cluster.var("KUBE_LIMITED_KUBECONFIG")).to_owned();
    let b = Berth::start_with_config(&berth_config(&kubeconfig));
    cluster.apply(&workloads(&b.host));
    let image = Image::generate(work.path(), "app", "1.2.4", 1, 2000);
    skopeo_push(&image, &format!("{}/team/app:1.2.4", b.host));
    let failed = wait_deploy(&b, "app", "1.2.4", |d| d["state"] == "failed");
    assert!(
        failed["message"].as_str().unwrap().contains("forbidden"),
        "{failed}"
    );
    let app = cluster.get_json(&["deployment", "app", "-n", NAMESPACE]);
    assert_eq!(
        container_image(&app, "app"),
        format!("{}/team/app:1.0.0", b.host),
        "nothing changed"
    );
}
