//! Push providers: each implements [`crate::core::ports::Push`] for one platform.

pub mod apns;
pub mod fcm;
pub mod webhook;
pub mod webpush;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::core::ports::PushError;
use crate::core::push_endpoints::EndpointPolicy;

/// The HTTP client settings every provider shares: each request bounded by `timeout`
/// (connecting, sending and reading the answer), redirects not followed, chatd's user agent,
/// and no proxy from the environment (`HTTPS_PROXY` and the like): the endpoint policy must
/// see, and connect to, the real address.
pub(crate) fn http_client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatd/", env!("CARGO_PKG_VERSION")))
}

/// [`http_client`] for user-registered endpoints (webhook, Web Push): host names resolve
/// only to the addresses `policy` allows, so a name cannot lead chatd into its own network.
pub(crate) fn endpoint_client(timeout: Duration, policy: &EndpointPolicy) -> reqwest::ClientBuilder {
    http_client(timeout).dns_resolver(Arc::new(PolicyResolver(policy.clone())))
}

/// Resolves through the system resolver, keeping the addresses the policy allows.
struct PolicyResolver(EndpointPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| policy.allows_addr(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The endpoint of a user-registered device if `policy` allows it (checked again at send
/// time: the policy may have changed since registration); refused ones are permanent.
pub(crate) fn allowed_endpoint(
    policy: &EndpointPolicy,
    endpoint: Option<&str>,
) -> Result<reqwest::Url, PushError> {
    let endpoint = endpoint.ok_or_else(|| PushError::Permanent("the device has no endpoint".into()))?;
    policy.check(endpoint).map_err(PushError::Permanent)
}

/// A request to `what` that got no answer: a bad URL is permanent, anything else (timeout,
/// connection) transient. The reason (logged, and kept with the job) leaves the URL out:
/// push URLs hold device tokens and Web Push capability tokens.
pub(crate) fn request_error(what: &str, err: &reqwest::Error) -> PushError {
    let cause = std::error::Error::source(err).map(|source| format!(": {source}")).unwrap_or_default();
    if err.is_builder() {
        PushError::Permanent(format!("{what}: bad URL{cause}"))
    } else {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        PushError::Retry { reason: format!("{what} {kind}{cause}"), retry_after: None }
    }
}

/// A `Retry-After` given in seconds (an HTTP date is ignored: backoff applies then).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn a_name_resolving_only_to_internal_addresses_is_refused_unless_private_is_allowed() {
        let strict = PolicyResolver(EndpointPolicy::default());
        let name = || Name::from_str("localhost").expect("a name");
        assert!(strict.resolve(name()).await.is_err(), "localhost resolves to loopback only");
        let open = PolicyResolver(EndpointPolicy { allow_private: true, allowed_hosts: Vec::new() });
        let addrs: Vec<SocketAddr> = open.resolve(name()).await.expect("resolves").collect();
        assert!(addrs.iter().all(|addr| addr.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");
    }
}
