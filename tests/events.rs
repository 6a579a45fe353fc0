//! Events delivered to a real HTTP receiver: the envelope registry:2
//! consumers read, the HMAC signature, filters, retries after failures,
//! and delivery after berth is killed with an event not yet delivered.

mod common;

use common::Berth;
use common::push::push_tagged;
use common::receiver::{Received, Receiver};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

fn webhook_config(url: &str, extra: &str) -> String {
    format!(
        "[events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\n\n\
         [[events.webhooks]]\nname = \"test\"\nurl = \"{url}\"\nsecret = \"s3cret\"\n\
         headers = {{ X-Team = \"platform\" }}\n{extra}\n"
    )
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn event_of(r: &Received) -> Value {
    let envelope: Value = serde_json::from_slice(&r.body).unwrap();
    let events = envelope["events"].as_array().expect("an events array");
    assert_eq!(events.len(), 1, "{envelope}");
    events[0].clone()
}

/// Reads berth's delivery log through its CLI.
fn deliveries(b: &Berth) -> String {
    b.manage(&["deliveries"])
}

#[tokio::test]
async fn a_push_reaches_the_webhook_signed_in_the_distribution_envelope() {
    let receiver = Receiver::start(0).await;
    let b = Berth::start_with_config(&webhook_config(&receiver.url(), ""));
    let c = reqwest::Client::new();
    let digest = push_tagged(&c, &b, "team/app", "1.2.4").await;

    let got = receiver.wait_for(1).await;
    let r = &got[0];
    assert_eq!(
        r.headers["content-type"],
        "application/vnd.docker.distribution.events.v2+json"
    );
    assert_eq!(r.headers["x-team"], "platform");
    let signature = r.headers["x-signature"].to_str().unwrap();
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex(b"s3cret", &r.body))
    );

    let event = event_of(r);
    assert_eq!(event["action"], "push");
    assert_eq!(event["target"]["repository"], "team/app");
    assert_eq!(event["target"]["tag"], "1.2.4");
    assert_eq!(event["target"]["digest"], digest);
    assert_eq!(
        event["target"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(event["target"]["size"].as_u64().unwrap() > 0);
    assert_eq!(
        event["target"]["url"],
        format!("http://{}/v2/team/app/manifests/{digest}", b.host)
    );
    assert_eq!(event["request"]["method"], "PUT");
    assert!(!event["request"]["id"].as_str().unwrap().is_empty());
    assert!(!event["id"].as_str().unwrap().is_empty());
    assert!(!event["source"]["instanceID"].as_str().unwrap().is_empty());

    // A delete is an event too; a pull is not, unless configured.
    let r = c
        .delete(b.url("/v2/team/app/manifests/1.2.4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = receiver.wait_for(2).await;
    let event = event_of(&got[1]);
    assert_eq!(event["action"], "delete");
    assert_eq!(event["target"]["tag"], "1.2.4");
    assert!(deliveries(&b).contains("delivered"));
}

#[tokio::test]
async fn failed_deliveries_are_retried_and_each_attempt_recorded() {
    let receiver = Receiver::start(2).await;
    let b = Berth::start_with_config(&webhook_config(&receiver.url(), ""));
    let c = reqwest::Client::new();
    push_tagged(&c, &b, "team/app", "v1").await;

    let got = receiver.wait_for(3).await;
    // The same event each time: a retry, not a new event.
    let ids: Vec<Value> = got.iter().map(|r| event_of(r)["id"].clone()).collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    // Attempts are recorded: 2 failures, then delivered on the third.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = deliveries(&b);
        let line = log
            .lines()
            .find(|l| l.contains("webhook:test"))
            .unwrap_or("");
        if line.contains("delivered") {
            // EVENT SINK STATE ATTEMPTS ...
            assert_eq!(line.split_whitespace().nth(3), Some("3"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_undelivered_event_survives_a_crash() {
    // Nothing listens on the port yet.
    let port: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let url = format!("http://{port}/hook");
    let mut b = Berth::start_with_config(&webhook_config(&url, ""));
    let c = reqwest::Client::new();
    let digest = push_tagged(&c, &b, "team/app", "crash").await;
    // The push was acknowledged; the receiver is down, so the event waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !deliveries(&b).contains("POST http") {
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.crash_and_restart();

    let receiver = Receiver::start_on(port, 0).await;
    let got = receiver.wait_for(1).await;
    let event = event_of(&got[0]);
    assert_eq!(event["target"]["digest"], digest);
    assert_eq!(event["target"]["tag"], "crash");
}

#[tokio::test]
async fn filters_and_cloudevents() {
    let receiver = Receiver::start(0).await;
    let extra = "format = \"cloudevents\"\nactions = [\"push\"]\nrepositories = [\"team/*\"]";
    let b = Berth::start_with_config(&webhook_config(&receiver.url(), extra));
    let c = reqwest::Client::new();
    push_tagged(&c, &b, "other/app", "1").await;
    let digest = push_tagged(&c, &b, "team/web", "2").await;
    let r = c
        .delete(b.url("/v2/team/web/manifests/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let got = receiver.wait_for(1).await;
    // Give a wrongly delivered event time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_now = receiver.received();
    assert_eq!(got_now.len(), 1, "only team/* pushes are wanted");
    assert_eq!(
        got[0].headers["content-type"],
        "application/cloudevents+json"
    );
    let ce: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "dev.berth.manifest.push");
    assert_eq!(ce["subject"], "team/web:2");
    assert_eq!(ce["data"]["target"]["digest"], digest);
}

#[tokio::test]
async fn pulls_are_events_when_configured() {
    let receiver = Receiver::start(0).await;
    let extra = "actions = [\"pull\"]";
    let config =
        webhook_config(&receiver.url(), extra).replace("[events]\n", "[events]\npulls = true\n");
    let b = Berth::start_with_config(&config);
    let c = reqwest::Client::new();
    let digest = push_tagged(&c, &b, "team/app", "p").await;
    let r = c
        .get(b.url("/v2/team/app/manifests/p"))
        .header("accept", common::push::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = receiver.wait_for(1).await;
    let event = event_of(&got[0]);
    assert_eq!(event["action"], "pull");
    assert_eq!(event["target"]["digest"], digest);
}
