//! Which push endpoints users may register: the guard against server-side request forgery.
//!
//! Webhook and Web Push devices carry a URL chosen by the user, which chatd then POSTs to.
//! Unguarded, any user could make chatd call its own network (an admin port, a cloud
//! metadata service at 169.254.169.254). By default an endpoint must be `https` and its host
//! must be public: no loopback, private, link-local, unique-local, shared, multicast or
//! unspecified address, checked at registration for IP literals and again, at send time, for
//! every address a host name resolves to (so a DNS answer that changes after registration
//! gains nothing). Operators may narrow it further to a list of host names, and tests or
//! closed deployments may allow private hosts and plain `http`.

use std::net::IpAddr;

use url::{Host, Url};

/// What makes an endpoint acceptable; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    /// Also allow `http://` and hosts on private, loopback and link-local addresses.
    pub allow_private: bool,
    /// When non-empty, the endpoint's host must be one of these names or a subdomain of one
    /// (lowercase, no trailing dot), e.g. `fcm.googleapis.com`, `push.example.com`.
    pub allowed_hosts: Vec<String>,
}

impl EndpointPolicy {
    /// The parsed endpoint if the policy allows it, else why not (for the client's error).
    pub fn check(&self, endpoint: &str) -> Result<Url, String> {
        let url = Url::parse(endpoint).map_err(|err| format!("endpoint is not a URL: {err}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ => return Err("endpoint must be an https URL".into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("endpoint must not carry credentials".into());
        }
        let name = match url.host() {
            None => return Err("endpoint has no host".into()),
            Some(Host::Ipv4(ip)) => return self.check_literal(IpAddr::V4(ip)).map(|()| url),
            Some(Host::Ipv6(ip)) => return self.check_literal(IpAddr::V6(ip)).map(|()| url),
            Some(Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        };
        if !self.allow_private && (name == "localhost" || name.ends_with(".localhost")) {
            return Err("endpoint host must be public".into());
        }
        if !self.allows_name(&name) {
            return Err("endpoint host is not among the allowed push hosts".into());
        }
        Ok(url)
    }

    /// Whether a connection to `ip` is allowed (each address a host name resolves to).
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allowed_hosts.is_empty() {
            return Err("endpoint host is not among the allowed push hosts".into());
        }
        if !self.allows_addr(ip) {
            return Err("endpoint host must be public".into());
        }
        Ok(())
    }

    fn allows_name(&self, name: &str) -> bool {
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|allowed| {
                name == allowed
                    || name.strip_suffix(allowed.as_str()).is_some_and(|prefix| prefix.ends_with('.'))
            })
    }
}

/// Whether `ip` is a globally routable unicast address (what a push service has).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                // 100.64.0.0/10: carrier-grade NAT (shared address space).
                || (a == 100 && (64..128).contains(&b))
                // 192.0.0.0/24: IETF protocol assignments.
                || (a == 192 && b == 0 && ip.octets()[2] == 0)
                // 198.18.0.0/15: benchmarking; 240.0.0.0/4: reserved.
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(ip.is_unspecified()
                    || ip.is_loopback()
                    || ip.is_multicast()
                    || ip.is_unique_local()
                    || ip.is_unicast_link_local()
                    // fec0::/10: deprecated site-local, still routed inside some networks.
                    || (ip.segments()[0] & 0xffc0) == 0xfec0
                    // 64:ff9b::/96 NAT64, 64:ff9b:1::/48 local-use NAT64 and 2001:db8::/32
                    // documentation.
                    || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    || ip.segments()[..3] == [0x64, 0xff9b, 1]
                    || ip.segments()[..2] == [0x2001, 0xdb8])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EndpointPolicy {
        EndpointPolicy::default()
    }

    #[test]
    fn public_https_endpoints_pass_and_internal_ones_do_not() {
        assert!(strict().check("https://fcm.googleapis.com/fcm/send/abc").is_ok());
        assert!(strict().check("https://93.184.216.34/hook").is_ok());
        for refused in [
            "http://push.example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:192.168.0.1]/hook",
            "https://100.64.0.1/hook",
            "https://0.0.0.0/hook",
            "https://localhost/hook",
            "https://api.localhost./hook",
            "https://user:pw@push.example.com/hook",
            "ftp://push.example.com/hook",
            "not a url",
        ] {
            assert!(strict().check(refused).is_err(), "{refused} must be refused");
        }
    }

    #[test]
    fn site_local_local_nat64_and_ietf_protocol_addresses_are_not_public() {
        for refused in
            ["fec0::1", "feff:ffff::1", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::1", "192.0.0.8", "192.0.0.170"]
        {
            assert!(!is_public(refused.parse().unwrap()), "{refused} must not count as public");
        }
        for public in ["fe00::1", "64:ff9b:2::1", "192.0.1.1", "192.1.0.1"] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
        assert!(strict().check("https://[fec0::1]/hook").is_err());
        assert!(strict().check("https://192.0.0.9/hook").is_err());
    }

    #[test]
    fn allow_private_admits_http_and_internal_hosts() {
        let open = EndpointPolicy { allow_private: true, allowed_hosts: Vec::new() };
        assert!(open.check("http://127.0.0.1:8080/hook").is_ok());
        assert!(open.allows_addr("10.0.0.1".parse().unwrap()));
        assert!(!strict().allows_addr("10.0.0.1".parse().unwrap()));
        assert!(strict().allows_addr("2606:4700::1111".parse().unwrap()));
    }

    #[test]
    fn an_allowlist_admits_its_hosts_and_their_subdomains_only() {
        let listed = EndpointPolicy { allow_private: false, allowed_hosts: vec!["push.example.com".into()] };
        assert!(listed.check("https://push.example.com/a").is_ok());
        assert!(listed.check("https://eu.push.example.com/a").is_ok());
        assert!(listed.check("https://PUSH.example.com./a").is_ok());
        assert!(listed.check("https://evilpush.example.com/a").is_err());
        assert!(listed.check("https://example.com/a").is_err());
        assert!(listed.check("https://93.184.216.34/a").is_err());
    }
}
