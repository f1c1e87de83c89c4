//! Where webhooks may go. A target must be `http(s)://host[:port]/…` without credentials,
//! and every address its host resolves to must be public: loopback, private, link-local
//! (169.254.0.0/16 holds cloud metadata services), unique-local, CGNAT, multicast, reserved
//! and unspecified addresses are refused, unless `notifications.allow_private_targets`.
//! The check runs when a channel is created and again on every attempt, through
//! [`GuardedResolver`], because DNS can change between the two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Longest target URL accepted.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("url is not a valid absolute URL")]
    Invalid,
    #[error("url must use http or https")]
    Scheme,
    #[error("url must not carry credentials")]
    Credentials,
    #[error("url is longer than 2048 characters")]
    TooLong,
    #[error("url resolves to a loopback, private, link-local or otherwise non-public address ({0}); refused")]
    Private(IpAddr),
    #[error("url's host does not resolve: {0}")]
    Unresolvable(String),
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_forbidden(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let o = ip.octets();
        return v4_forbidden(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

/// Whether webhooks must not be sent to `ip`.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => v6_forbidden(v6),
    }
}

/// Parses and checks the URL's shape, and its host when it is an IP literal.
pub fn parse(url: &str, allow_private: bool) -> Result<Url, TargetError> {
    if url.len() > MAX_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let parsed = Url::parse(url).map_err(|_| TargetError::Invalid)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let literal = match parsed.host() {
        None => return Err(TargetError::Invalid),
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(Host::Domain(_)) => None,
    };
    if let Some(ip) = literal.filter(|ip| !allow_private && is_forbidden(*ip)) {
        return Err(TargetError::Private(ip));
    }
    Ok(parsed)
}

/// Resolves `host` and refuses it when any address is forbidden (a name that mixes public
/// and private addresses is a rebinding trick).
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| TargetError::Unresolvable(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable("no address".into()));
    }
    if let Some(bad) = addrs
        .iter()
        .find(|a| !allow_private && is_forbidden(a.ip()))
    {
        return Err(TargetError::Private(bad.ip()));
    }
    Ok(addrs)
}

/// Checks a channel's URL at creation: shape, then every address its host resolves to.
pub async fn check(url: &str, allow_private: bool) -> Result<Url, TargetError> {
    let parsed = parse(url, allow_private)?;
    if let Some(Host::Domain(host)) = parsed.host() {
        resolve(
            host,
            parsed.port_or_known_default().unwrap_or(443),
            allow_private,
        )
        .await?;
    }
    Ok(parsed)
}

/// The notifier's DNS resolver: the same check on every connection it makes.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, allow) = (name.as_str().to_owned(), self.allow_private);
        Box::pin(async move {
            let addrs = resolve(&host, 0, allow).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn url_shape_is_checked() {
        assert_eq!(parse("ftp://example.com/", false), Err(TargetError::Scheme));
        assert_eq!(
            parse("https://u:p@example.com/", false),
            Err(TargetError::Credentials)
        );
        assert_eq!(parse("not a url", false), Err(TargetError::Invalid));
        assert!(matches!(
            parse("http://169.254.169.254/latest/meta-data", false),
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            parse("http://[::1]:8080/", false),
            Err(TargetError::Private(_))
        ));
        assert!(parse("http://127.0.0.1:9/", true).is_ok());
        assert!(parse("https://hooks.example.com/x", false).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        assert!(matches!(
            check("http://localhost:8080/hook", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(check("http://localhost:8080/hook", true).await.is_ok());
    }
}
