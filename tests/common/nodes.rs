//! A simulated node for the node-less test cluster, in the manner of the
//! kwok project: it registers a Node that reports Ready (with a fresh
//! heartbeat), binds every pending pod to it, as a scheduler would, and
//! reports their containers running and ready, as a kubelet would. Pods
//! being deleted are removed at once, as a kubelet does once their
//! containers stopped. So Deployments roll out as on a cluster with
//! nodes. Nothing runs, but a pod starts only once the manifest of each of
//! its images can be fetched without credentials (with skopeo, plain HTTP
//! allowed), as a kubelet with no pull secret would fetch it.
//!
//! Used as `#[path = "common/nodes.rs"] mod nodes;`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How often pods are looked at: well under a rollout's patience.
const TICK: Duration = Duration::from_millis(250);
/// How often the node's Ready condition is renewed, as a kubelet's
/// status updates are (its default is 10 s).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a failed pull is remembered before it is tried again.
const PULL_BACKOFF: Duration = Duration::from_secs(2);

/// The simulation runs until this is dropped.
pub struct SimulatedNode {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimulatedNode {
    /// Registers the node `name` with the cluster `kubeconfig` names (as
    /// its administrator) and starts running pods on it.
    pub fn start(kubeconfig: &Path, name: &str) -> SimulatedNode {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the simulated node");
        let kubelet = runtime.block_on(Kubelet::register(kubeconfig, name));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(kubelet.run(&stopped));
        });
        SimulatedNode {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SimulatedNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Kubelet {
    node: String,
    nodes: Api<Node>,
    client: kube::Client,
    /// Pod IPs handed out so far, for distinct addresses.
    started: u32,
    pulls: HashMap<String, Pull>,
}

/// What came of pulling an image.
enum Pull {
    Done,
    FailedAt(Instant),
}

impl Kubelet {
    async fn register(kubeconfig: &Path, name: &str) -> Kubelet {
        let file = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .expect("a client config from the kubeconfig");
        let client = kube::Client::try_from(config).expect("a Kubernetes client");
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" }
            }
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("registering node {name}: {e}"));
        let kubelet = Kubelet {
            node: name.to_owned(),
            nodes,
            client,
            started: 0,
            pulls: HashMap::new(),
        };
        kubelet
            .heartbeat()
            .await
            .unwrap_or_else(|e| panic!("reporting node {name} ready: {e}"));
        kubelet
    }

    async fn run(mut self, stop: &AtomicBool) {
        let mut last_heartbeat = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // The API server may be slow or restarting; the next tick
            // tries again, as a kubelet would.
            if last_heartbeat.elapsed() >= HEARTBEAT {
                match self.heartbeat().await {
                    Ok(()) => last_heartbeat = Instant::now(),
                    Err(e) => eprintln!("simulated node: heartbeat: {e}"),
                }
            }
            if let Err(e) = self.tend_pods().await {
                eprintln!("simulated node: {e}");
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn heartbeat(&self) -> kube::Result<()> {
        let now = now();
        let resources = json!({ "cpu": "8", "memory": "32Gi", "pods": "110" });
        let status = json!({ "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{ "type": "InternalIP", "address": "192.0.2.1" }],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "simulated",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
        }});
        self.nodes
            .patch_status(&self.node, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        Ok(())
    }

    /// One look at every pod: bind the pending ones, start the bound ones,
    /// and finish deleting the ones being deleted.
    async fn tend_pods(&mut self) -> kube::Result<()> {
        let all: Api<Pod> = Api::all(self.client.clone());
        for pod in all.list(&ListParams::default()).await? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let spec = pod.spec.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                if spec.node_name.as_deref() == Some(&self.node) {
                    // A grace period of 0 is how a kubelet says the
                    // containers are gone.
                    ignore_gone(
                        pods.delete(&name, &DeleteParams::default().grace_period(0))
                            .await,
                    )?;
                }
                continue;
            }
            match spec.node_name.as_deref() {
                None => {
                    let binding = json!({
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": { "name": name },
                        "target": { "apiVersion": "v1", "kind": "Node", "name": self.node },
                    });
                    ignore_gone(
                        pods.create_subresource::<_, Value>(
                            "binding",
                            &name,
                            &PostParams::default(),
                            &binding,
                        )
                        .await,
                    )?;
                }
                Some(node) if node == self.node => {}
                Some(_) => continue,
            }
            let running = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Running");
            if !running
                && spec
                    .containers
                    .iter()
                    .all(|c| self.pull(c.image.as_deref()))
            {
                self.started += 1;
                let status = running_status(&spec, self.started);
                ignore_gone(
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await,
                )?;
            }
        }
        Ok(())
    }

    /// Whether `image` can be pulled: its manifest is fetched anonymously,
    /// once; a failure is tried again after PULL_BACKOFF, as a kubelet
    /// backs off.
    fn pull(&mut self, image: Option<&str>) -> bool {
        let Some(image) = image else { return false };
        match self.pulls.get(image) {
            Some(Pull::Done) => return true,
            Some(Pull::FailedAt(when)) if when.elapsed() < PULL_BACKOFF => return false,
            _ => {}
        }
        let out = Command::new("skopeo")
            .args(["--command-timeout", "10s", "inspect", "--raw", "--no-creds"])
            .args(["--tls-verify=false", &format!("docker://{image}")])
            .output()
            .expect("run skopeo (scripts/install-test-deps.sh installs it)");
        if out.status.success() {
            self.pulls.insert(image.to_owned(), Pull::Done);
            return true;
        }
        if !self.pulls.contains_key(image) {
            eprintln!(
                "simulated node: cannot pull {image} (retrying): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.pulls
            .insert(image.to_owned(), Pull::FailedAt(Instant::now()));
        false
    }
}

/// The status a kubelet reports once every container of a pod started
/// and passed its readiness check.
fn running_status(spec: &k8s_openapi::api::core::v1::PodSpec, n: u32) -> Value {
    let now = now();
    let ip = format!("198.51.100.{}", n % 250 + 1);
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let condition = |kind: &str| json!({ "type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now });
    json!({ "status": {
        "phase": "Running",
        "hostIP": "192.0.2.1",
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "startTime": now,
        "conditions": [
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": containers,
    }})
}

/// A pod deleted or bound meanwhile is no error: the next tick sees it as
/// it now is.
fn ignore_gone<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
