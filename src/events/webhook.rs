//! Delivers events to an HTTP endpoint: one POST per event, in the
//! configured format, signed with HMAC-SHA256 when a secret is set
//! (`X-Signature: sha256=<hex>`, which Flux's generic-hmac receiver and
//! most in-house receivers check).

use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::core::event::Event;
use crate::events::EventFilter;
use crate::events::envelope::{Format, Source};
use crate::events::outbox::Sink;

pub struct Webhook {
    sink_name: String,
    url: String,
    format: Format,
    secret: Option<Vec<u8>>,
    headers: HeaderMap,
    filter: EventFilter,
    source: Source,
    client: reqwest::Client,
}

/// A webhook as configured.
pub struct WebhookSettings<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub format: &'a str,
    pub secret: &'a str,
    pub headers: &'a [(String, String)],
    pub filter: EventFilter,
    pub timeout: Duration,
}

impl Webhook {
    pub fn new(settings: WebhookSettings<'_>, source: Source) -> anyhow::Result<Webhook> {
        let format = Format::parse(settings.format).ok_or_else(|| {
            anyhow::anyhow!(
                "webhook {}: format {:?} is not distribution or cloudevents",
                settings.name,
                settings.format
            )
        })?;
        reqwest::Url::parse(settings.url).map_err(|e| {
            anyhow::anyhow!("webhook {}: url {:?}: {e}", settings.name, settings.url)
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in settings.headers {
            let bad =
                |e: String| anyhow::anyhow!("webhook {}: header {name:?}: {e}", settings.name);
            headers.insert(
                HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?,
                HeaderValue::try_from(value.as_str()).map_err(|e| bad(e.to_string()))?,
            );
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook {
            sink_name: format!("webhook:{}", settings.name),
            url: settings.url.to_owned(),
            format,
            secret: Some(settings.secret.as_bytes().to_vec()).filter(|s| !s.is_empty()),
            headers,
            filter: settings.filter,
            source,
            client,
        })
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Sink for Webhook {
    fn name(&self) -> &str {
        &self.sink_name
    }

    fn wants(&self, event: &Event) -> bool {
        self.filter.wants(event)
    }

    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let body = self.format.render(event, &self.source);
            let mut request = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, self.format.media_type());
            if let Some(secret) = &self.secret {
                request = request.header("x-signature", signature(secret, &body));
            }
            let response = request
                .body(body)
                .send()
                .await
                .map_err(|e| format!("POST {}: {e}", self.url))?;
            let status = response.status();
            if status.is_success() {
                Ok(format!("{status}"))
            } else {
                Err(format!("POST {} answered {status}", self.url))
            }
        })
    }

    fn test(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let ping = Event::new(
                crate::core::event::Action::Ping,
                "",
                &crate::core::event::Origin::default(),
            );
            self.deliver(&ping).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
