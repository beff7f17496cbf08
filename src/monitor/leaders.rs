//! Which RabbitMQ node leads each quorum queue, and which members are online — read from the
//! management API (`AMQP_MANAGEMENT_URL`: one `http://user:password@host:15672` per node, or
//! the one of a load balancer), since AMQP itself does not say. Polled every 2 s, trying the
//! nodes in order from the last one that answered; when none answers, what was read last is
//! kept and marked stale by its age. Without `AMQP_MANAGEMENT_URL` nothing is read and the
//! monitor shows no leaders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Monitor;

const EVERY: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(2);

/// One queue's replication as the management API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct Membership {
    pub name: String,
    /// The Erlang node leading the queue (`rabbit@host`).
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub online: Vec<String>,
}

/// A management API endpoint: base URL without credentials, and the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub base: String,
    pub user: String,
    pub password: String,
}

/// Never prints the password (the configuration is logged with `{:?}` in places).
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// The endpoints of `AMQP_MANAGEMENT_URL` (comma-separated `http(s)://user:password@host:port`).
pub fn endpoints(list: &str) -> Result<Vec<Endpoint>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|raw| {
            let mut url = url::Url::parse(raw).map_err(|e| {
                format!(
                    "AMQP_MANAGEMENT_URL: {:?} is not a URL ({e})",
                    crate::urls::redact(raw)
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "AMQP_MANAGEMENT_URL: {:?} must start with http:// or https://",
                    crate::urls::redact(raw)
                ));
            }
            let user = crate::urls::percent_decode(url.username());
            let password = crate::urls::percent_decode(url.password().unwrap_or(""));
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Ok(Endpoint {
                base: url.as_str().trim_end_matches('/').to_owned(),
                user: if user.is_empty() {
                    "guest".into()
                } else {
                    user
                },
                password,
            })
        })
        .collect()
}

/// The vhost of an AMQP URL as the management API's path wants it (percent-encoded; `/` is
/// `%2F`).
pub fn vhost_path(amqp_url: &str) -> String {
    let node = crate::urls::first_node(amqp_url);
    let rest = node.split_once("://").map_or(node.as_str(), |(_, r)| r);
    let path = rest
        .split_once('/')
        .map_or("", |(_, p)| p.split('?').next().unwrap_or(""));
    if path.is_empty() {
        "%2F".into()
    } else {
        path.to_owned()
    }
}

/// Polls the management API for as long as the process runs (a local task: the HTTP client is
/// not `Send`).
pub fn spawn(monitor: Arc<Monitor>, endpoints: Vec<Endpoint>, vhost: String) {
    if endpoints.is_empty() {
        return;
    }
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder().timeout(TIMEOUT).finish();
        let mut start = 0;
        loop {
            for k in 0..endpoints.len() {
                let i = (start + k) % endpoints.len();
                let Some(e) = endpoints.get(i) else { continue };
                let url = format!(
                    "{}/api/queues/{vhost}?columns=name,leader,members,online",
                    e.base
                );
                let read = async {
                    let mut resp = client
                        .get(&url)
                        .basic_auth(&e.user, &e.password)
                        .send()
                        .await
                        .map_err(|err| err.to_string())?;
                    if !resp.status().is_success() {
                        return Err(format!("HTTP {}", resp.status()));
                    }
                    resp.json::<Vec<Membership>>()
                        .limit(4 << 20)
                        .await
                        .map_err(|err| err.to_string())
                };
                match read.await {
                    Ok(queues) => {
                        monitor.set_memberships(queues, Instant::now());
                        start = i;
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(endpoint = %e.base, error = %err, "management API unreadable");
                    }
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_their_credentials_apart() {
        let e = endpoints("http://ops:p%40ss@n1:15672/, https://n2:15671").unwrap();
        assert_eq!(
            e,
            [
                Endpoint {
                    base: "http://n1:15672".into(),
                    user: "ops".into(),
                    password: "p@ss".into()
                },
                Endpoint {
                    base: "https://n2:15671".into(),
                    user: "guest".into(),
                    password: String::new()
                }
            ]
        );
        assert!(endpoints("amqp://n1:5672").is_err());
    }

    #[test]
    fn the_vhost_is_encoded_for_the_path() {
        assert_eq!(vhost_path("amqp://g:g@h:5672/%2f"), "%2f");
        assert_eq!(
            vhost_path("amqp://g:g@h:5672/shop,amqp://g:g@i/shop"),
            "shop"
        );
        assert_eq!(vhost_path("amqp://h:5672"), "%2F");
    }
}
