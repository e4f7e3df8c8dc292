//! Webhooks: the prediction (or training) JSON, as `GET` returns it, sent to the URL its creator
//! gave on the events it asked for (`start`, `output`, `logs`, `completed`; all by default).
//!
//! - Output and logs are throttled per job to one delivery every [`THROTTLE`], coalescing
//!   whatever happened meanwhile into the next one.
//! - Only the terminal `completed` delivery is retried, with exponential backoff
//!   ([`TRIES`] tries over about a minute).
//! - Each job's deliveries run in a task of their own, one after another, each with a timeout:
//!   a target that is down or slow delays only that job's webhooks, never a prediction.
//! - Signed in the Standard Webhooks style: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//!   base64-decoded part of the account's `whsec_...` secret after the underscore.
//! - Targets are https and public unless the server runs with `--allow-private-webhooks`:
//!   checked at creation ([`check_target`]) and again before each delivery (a name may resolve
//!   elsewhere later). Redirects are not followed.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use modelyard_domain::{Job, JobKind};
use modelyard_runner::{Event, Runner};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::AppState;
use crate::views;

/// Output and logs webhooks of one job: at most one per this long.
pub const THROTTLE: Duration = Duration::from_millis(500);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of the terminal delivery; the waits between them double from [`FIRST_RETRY`]
/// (4 + 8 + 16 + 32 s: about a minute).
const TRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(4);

/// A new signing secret, in the Standard Webhooks form `whsec_<base64>`.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `webhook-signature` header for a message: `v1,<base64 HMAC-SHA256>`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = secret.split_once('_').map_or(secret, |(_, k)| k);
    let key = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Some(format!("v1,{sig}"))
}

/// Addresses a webhook may not reach unless private webhooks are allowed: loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast and documentation ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => private_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return private_v4(v4);
            }
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (first == 0x2001 && a.segments()[1] == 0x0db8) // documentation
                || a == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
        }
    }
}

fn private_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space 100.64/10
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

/// Why a webhook target is refused, in a sentence about the URL.
#[derive(Debug)]
pub struct Refused(pub String);

fn refused(why: impl Into<String>) -> Refused {
    Refused(why.into())
}

/// Whether a webhook may go to `url`: an http(s) URL, and unless private webhooks are allowed,
/// https to a host that is (and resolves only to) public addresses.
pub async fn check_target(allow_private: bool, url: &str) -> Result<(), Refused> {
    let u = url::Url::parse(url).map_err(|_| refused("must be an http(s) URL"))?;
    let hint = "; this server accepts only https webhooks to public addresses unless it runs \
                with --allow-private-webhooks (MODELYARD_ALLOW_PRIVATE_WEBHOOKS=1)";
    match u.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(refused(format!("{url} is plain http{hint}"))),
        _ => return Err(refused("must be an http(s) URL")),
    }
    if allow_private {
        return Ok(());
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let private = |ip: IpAddr| refused(format!("{url} points at the private address {ip}{hint}"));
    match u.host() {
        Some(url::Host::Ipv4(a)) if is_private(IpAddr::V4(a)) => Err(private(IpAddr::V4(a))),
        Some(url::Host::Ipv6(a)) if is_private(IpAddr::V6(a)) => Err(private(IpAddr::V6(a))),
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => Ok(()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err(refused(format!(
                    "{url} points at this machine (localhost){hint}"
                )));
            }
            let looked = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((d.as_str(), port)),
            )
            .await;
            let addrs: Vec<_> = match looked {
                Ok(Ok(a)) => a.collect(),
                _ => return Err(refused(format!("the host of {url} cannot be resolved"))),
            };
            if addrs.is_empty() {
                return Err(refused(format!("the host of {url} cannot be resolved")));
            }
            match addrs.iter().find(|a| is_private(a.ip())) {
                Some(a) => Err(private(a.ip())),
                None => Ok(()),
            }
        }
        None => Err(refused("must name a host")),
    }
}

/// Follows the events of every job this node's runner runs and delivers the webhooks they call
/// for. Only the node that runs a job sends its webhooks, so each is sent once however many
/// nodes follow the job.
pub fn start(state: AppState, runner: &Runner) {
    let mut events = runner.follow_all();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("modelyard-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    tokio::spawn(async move {
        let mut jobs: HashMap<String, mpsc::UnboundedSender<Event>> = HashMap::new();
        loop {
            let (id, event) = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "webhooks fell behind the runner's events");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let done = matches!(event, Event::Done(_));
            let tx = jobs.entry(id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(follow(state.clone(), http.clone(), id.clone(), rx));
                tx
            });
            // A job without a webhook has no follower left: nothing to do.
            let _ = tx.send(event);
            if done {
                jobs.remove(&id);
            }
        }
    });
}

async fn load(s: &AppState, id: &str) -> Option<Job> {
    for kind in [JobKind::Prediction, JobKind::Training] {
        if let Ok(Some(j)) = s.store.job(kind, id).await {
            return Some(j);
        }
    }
    None
}

/// One job's webhooks, in order.
async fn follow(
    s: AppState,
    http: reqwest::Client,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
) {
    let Some(job) = load(&s, &id).await else {
        return;
    };
    let Some(url) = job.webhook.clone() else {
        return;
    };
    let filter = job.webhook_events_filter.clone();
    let want = |e: &str| filter.is_empty() || filter.iter().any(|f| f == e);
    let target = Target {
        s: &s,
        http: &http,
        url: &url,
        account_id: job.account_id,
    };
    // What the record may not have yet: events arrive before progress is written.
    let mut output = job.output.clone();
    let mut logs = job.logs.clone();
    let mut dirty = false;
    let mut last: Option<Instant> = None;
    let mut ended = false;
    loop {
        let flush_at = last.map_or_else(Instant::now, |t| t + THROTTLE);
        let event = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => Some(e),
                None => break,
            },
            _ = tokio::time::sleep_until(flush_at), if dirty => None,
        };
        match event {
            Some(Event::Started) if want("start") => {
                if let Some(j) = load(&s, &id).await {
                    target.deliver(&body(&s, &j, &output, &logs), 1).await;
                }
            }
            Some(Event::Started) => {}
            Some(Event::Output { index, value }) => {
                match index {
                    Some(i) => {
                        let mut items = match output.take() {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        items.truncate(i);
                        items.push(value);
                        output = Some(Value::Array(items));
                    }
                    None => output = Some(value),
                }
                dirty |= want("output");
            }
            Some(Event::Logs { offset, text }) => {
                if offset <= logs.len() && logs.is_char_boundary(offset) {
                    logs.truncate(offset);
                    logs.push_str(&text);
                }
                dirty |= want("logs");
            }
            Some(Event::Done(_)) => {
                ended = true;
                break;
            }
            None => {}
        }
        if dirty && last.is_none_or(|t| t.elapsed() >= THROTTLE) {
            if let Some(j) = load(&s, &id).await {
                target.deliver(&body(&s, &j, &output, &logs), 1).await;
            }
            dirty = false;
            last = Some(Instant::now());
        }
    }
    if !ended {
        return;
    }
    // The record has the final word.
    let Some(j) = load(&s, &id).await else { return };
    if want("completed") && j.status.is_terminal() {
        target.deliver(&views::job(&s, &j), TRIES).await;
    } else if dirty {
        target.deliver(&views::job(&s, &j), 1).await;
    }
}

/// The job as GET shows it, with the output and logs seen so far while it runs.
fn body(s: &AppState, j: &Job, output: &Option<Value>, logs: &str) -> Value {
    let mut v = views::job(s, j);
    if !j.status.is_terminal() && !j.data_removed {
        if output.is_some() {
            v["output"] = output.clone().unwrap_or(Value::Null);
        }
        if logs.len() > v["logs"].as_str().map_or(0, str::len) {
            v["logs"] = json!(logs);
        }
    }
    v
}

struct Target<'a> {
    s: &'a AppState,
    http: &'a reqwest::Client,
    url: &'a str,
    account_id: i64,
}

impl Target<'_> {
    /// One message, tried up to `tries` times; true when the target took it.
    async fn deliver(&self, payload: &Value, tries: u32) -> bool {
        let secret = match self
            .s
            .store
            .webhook_secret(self.account_id, &new_secret())
            .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no webhook secret; not delivering");
                return false;
            }
        };
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        // One id for every try of the same message, so receivers can drop duplicates.
        let msg_id = format!("msg_{}", hex::encode(id));
        let body = payload.to_string();
        let allow = self.s.config.allow_private_webhooks;
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(FIRST_RETRY * 2u32.pow(attempt - 1)).await;
            }
            if let Err(e) = check_target(allow, self.url).await {
                tracing::warn!(url = %self.url, error = %e.0, "webhook target refused at delivery");
                return false;
            }
            let ts = chrono::Utc::now().timestamp();
            let Some(sig) = sign(&secret, &msg_id, ts, &body) else {
                return false;
            };
            let sent = self
                .http
                .post(self.url)
                .timeout(TIMEOUT)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    tracing::warn!(url = %self.url, status = %r.status(), attempt, "webhook not accepted")
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, attempt, "webhook not delivered")
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn targets() {
        assert!(check_target(false, "http://example.com/hook")
            .await
            .is_err());
        assert!(check_target(false, "https://127.0.0.1/hook").await.is_err());
        assert!(check_target(false, "https://[::1]:8443/hook")
            .await
            .is_err());
        assert!(check_target(false, "https://localhost/hook").await.is_err());
        assert!(check_target(false, "https://10.0.0.8/hook").await.is_err());
        assert!(check_target(false, "ftp://example.com/").await.is_err());
        assert!(check_target(false, "https://8.8.8.8/hook").await.is_ok());
        assert!(check_target(true, "http://127.0.0.1:9/hook").await.is_ok());
        assert!(check_target(true, "ftp://127.0.0.1/").await.is_err());
    }
}
