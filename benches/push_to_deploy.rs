//! Push-to-patch latency: from the manifest PUT being answered to the
//! Deployment in a real (node-less) Kubernetes API server carrying the
//! pushed digest. The patch is seen through a `kubectl get -w` watch, so
//! the figure includes the API server's watch delivery. Reports the median,
//! p90 and max over `PUSH_TO_DEPLOY_RUNS` pushes (default 20).
//!
//! Run: `cargo bench --bench push_to_deploy`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Berth;
use common::kube::Cluster;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("PUSH_TO_DEPLOY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cluster = Cluster::start();
    let kubeconfig = cluster.dir().join("admin.kubeconfig");
    let config = format!(
        "[deploy]\nkubeconfig = \"{}\"\n\n[[deploy.rules]]\nname = \"app\"\nrepository = \"team/app\"\n\
         [[deploy.rules.targets]]\nnamespace = \"default\"\nname = \"app\"\n",
        kubeconfig.display()
    );
    let b = Berth::start_with_config(&config);
    cluster.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: app, namespace: default }}\n\
         spec:\n  replicas: 0\n  selector: {{ matchLabels: {{ app: app }} }}\n  template:\n    \
         metadata: {{ labels: {{ app: app }} }}\n    spec:\n      containers:\n        \
         - {{ name: app, image: \"{}/team/app:0\" }}\n",
        b.host
    ));

    // Every image the Deployment takes, with the time it was seen.
    let mut watch = Command::new(cluster.var("KUBECTL"))
        .env("KUBECONFIG", cluster.var("KUBECONFIG"))
        .args(["get", "deployment", "app", "-n", "default", "-w", "-o"])
        .arg("jsonpath={.spec.template.spec.containers[0].image}{\"\\n\"}")
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl watch");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });

    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    for i in 1..=runs {
        let tag = format!("1.0.{i}");
        // push_tagged returns once the manifest PUT was answered.
        let digest = common::push::push_tagged(&client, &b, "team/app", &tag).await;
        let answered = Instant::now();
        let pinned = format!("{}/team/app@{digest}", b.host);
        let seen = loop {
            let (at, image) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the Deployment was not patched within 60 s");
            if image == pinned {
                break at;
            }
        };
        latencies.push(seen.saturating_duration_since(answered));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "push-to-patch over {runs} pushes: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(*latencies.last().unwrap())
    );
}
