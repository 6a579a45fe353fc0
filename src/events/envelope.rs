//! The bodies webhooks receive. The default is CNCF Distribution's
//! notification envelope, so consumers written for registry:2 (Keel, and
//! the many in-house receivers) work unchanged; CloudEvents 1.0 in
//! structured JSON mode is the alternative.

use serde_json::{Value, json};

use crate::core::event::Event;

pub const DISTRIBUTION_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";
pub const CLOUDEVENTS_MEDIA_TYPE: &str = "application/cloudevents+json";

/// This registry instance, as events name their source.
#[derive(Clone, Debug)]
pub struct Source {
    /// host:port this instance listens on.
    pub addr: String,
    /// Random per process, as Distribution's `instanceID`.
    pub instance_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Distribution,
    CloudEvents,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "distribution" => Some(Format::Distribution),
            "cloudevents" => Some(Format::CloudEvents),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Distribution => DISTRIBUTION_MEDIA_TYPE,
            Format::CloudEvents => CLOUDEVENTS_MEDIA_TYPE,
        }
    }

    /// The request body for one event.
    pub fn render(self, event: &Event, source: &Source) -> Vec<u8> {
        let body = match self {
            Format::Distribution => json!({ "events": [distribution_event(event, source)] }),
            Format::CloudEvents => cloud_event(event, source),
        };
        serde_json::to_vec(&body).expect("JSON values serialize")
    }
}

/// Where the manifest can be fetched, as the client named this registry.
fn target_url(event: &Event, source: &Source) -> Option<String> {
    let host = event.origin.host.as_deref().unwrap_or(&source.addr);
    let reference = event.digest.as_deref().or(event.tag.as_deref())?;
    Some(format!(
        "http://{host}/v2/{}/manifests/{reference}",
        event.repository
    ))
}

fn distribution_event(event: &Event, source: &Source) -> Value {
    let mut target = json!({ "repository": event.repository });
    let fields = [
        ("mediaType", event.media_type.clone().map(Value::from)),
        ("digest", event.digest.clone().map(Value::from)),
        ("size", event.size.map(Value::from)),
        ("length", event.size.map(Value::from)),
        ("tag", event.tag.clone().map(Value::from)),
        ("url", target_url(event, source).map(Value::from)),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            target[key] = value;
        }
    }
    let o = &event.origin;
    json!({
        "id": event.id,
        "timestamp": crate::meta::format_ms(event.created_at),
        "action": event.action.as_str(),
        "target": target,
        "request": {
            "id": o.request_id.clone().unwrap_or_default(),
            "addr": o.addr.clone().unwrap_or_default(),
            "host": o.host.clone().unwrap_or_default(),
            "method": o.method.clone().unwrap_or_default(),
            "useragent": o.user_agent.clone().unwrap_or_default(),
        },
        "actor": { "name": o.actor.clone().unwrap_or_default() },
        "source": { "addr": source.addr, "instanceID": source.instance_id },
    })
}

fn cloud_event(event: &Event, source: &Source) -> Value {
    let subject = match (&event.tag, &event.digest) {
        (Some(tag), _) => format!("{}:{tag}", event.repository),
        (None, Some(digest)) => format!("{}@{digest}", event.repository),
        (None, None) => event.repository.clone(),
    };
    json!({
        "specversion": "1.0",
        "id": event.id,
        "source": format!("berth://{}", source.addr),
        "type": format!("dev.berth.manifest.{}", event.action.as_str()),
        "subject": subject,
        "time": crate::meta::format_ms(event.created_at),
        "datacontenttype": "application/json",
        "data": distribution_event(event, source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Action, Origin};

    fn pushed() -> (Event, Source) {
        let origin = Origin {
            actor: Some("ci".into()),
            host: Some("registry.example.com:8888".into()),
            method: Some("PUT".into()),
            ..Origin::default()
        };
        let mut e = Event::new(Action::Push, "team/app", &origin);
        e.digest = Some("sha256:abc".into());
        e.tag = Some("1.2.4".into());
        e.size = Some(527);
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        let source = Source {
            addr: "berth-0:8888".into(),
            instance_id: "i-1".into(),
        };
        (e, source)
    }

    #[test]
    fn distribution_envelope_has_the_fields_consumers_read() {
        let (e, source) = pushed();
        let body: Value =
            serde_json::from_slice(&Format::Distribution.render(&e, &source)).unwrap();
        let ev = &body["events"][0];
        assert_eq!(ev["action"], "push");
        assert_eq!(ev["target"]["repository"], "team/app");
        assert_eq!(ev["target"]["digest"], "sha256:abc");
        assert_eq!(ev["target"]["tag"], "1.2.4");
        assert_eq!(ev["target"]["size"], 527);
        assert_eq!(
            ev["target"]["url"],
            "http://registry.example.com:8888/v2/team/app/manifests/sha256:abc"
        );
        assert_eq!(ev["actor"]["name"], "ci");
        assert_eq!(ev["source"]["instanceID"], "i-1");
        assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn cloudevents_carry_the_same_event() {
        let (e, source) = pushed();
        let body: Value = serde_json::from_slice(&Format::CloudEvents.render(&e, &source)).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "dev.berth.manifest.push");
        assert_eq!(body["subject"], "team/app:1.2.4");
        assert_eq!(body["data"]["target"]["digest"], "sha256:abc");
    }
}
