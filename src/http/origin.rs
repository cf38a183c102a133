//! Which origins and hosts are amihub's own: the address a connection arrived on (with the
//! loopback names when that address is loopback) and the origins listed in
//! `http.allowed_origins`. Never a header the client sets (`Host`, `X-Forwarded-Host`), which a
//! DNS-rebinding page controls. Pure string checks; knows nothing of actix.

use std::net::{IpAddr, SocketAddr};

use crate::auth::forwarded::is_loopback;

/// `host[:port]` of an authority, the host lower-cased; IPv6 keeps its brackets.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let a = authority.trim();
    if a.is_empty() || !a.is_ascii() || a.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = match a.rfind(':') {
        Some(i) if !a[i..].contains(']') => (&a[..i], Some(&a[i + 1..])),
        _ => (a, None),
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok()?,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The IP a URL host names, if it is a literal (`127.0.0.1`, `[::1]`).
fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// `localhost`, 127.0.0.0/8, `[::1]` (and the IPv4-mapped form): names no page can rebind.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || literal_ip(host).is_some_and(is_loopback)
}

/// `(scheme, host, port)` of an origin (`https://example.com:8443`).
fn split_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_authority(rest, default_port)?;
    Some((scheme, host, port))
}

/// The origins listed in `allowed_origins` (`*` allows every origin).
fn listed(origin: &str, allowed: &[String]) -> bool {
    let wanted = split_origin(origin);
    allowed
        .iter()
        .any(|a| a == "*" || (wanted.is_some() && split_origin(a) == wanted))
}

/// True when `host` is the connection's own address or, for a loopback connection, a loopback
/// name.
fn own_host(host: &str, port: u16, local: SocketAddr) -> bool {
    if port != local.port() {
        return false;
    }
    let local_ip = local.ip().to_canonical();
    if is_loopback(local_ip) && is_loopback_host(host) {
        return true;
    }
    literal_ip(host).is_some_and(|ip| ip.to_canonical() == local_ip)
}

/// Whether a browser page at `origin` may drive amihub: its own origin (scheme of the listener,
/// the address the connection arrived on, loopback names for a loopback listener) or one listed
/// in `allowed_origins`.
pub fn origin_allowed(origin: &str, local: SocketAddr, tls: bool, allowed: &[String]) -> bool {
    if listed(origin, allowed) {
        return true;
    }
    let Some((scheme, host, port)) = split_origin(origin) else {
        return false;
    };
    scheme == if tls { "https" } else { "http" } && own_host(&host, port, local)
}

/// Loopback-only mode (no users): whether a request's `Host` may be served. Only loopback
/// names with the listen port, or the authority of an `allowed_origins` entry (how an operator
/// declares the name a local proxy or tunnel serves amihub under). A DNS-rebinding page's
/// `Host: evil.example:8000` is neither.
pub fn host_allowed(host: &str, local: SocketAddr, tls: bool, allowed: &[String]) -> bool {
    let default_port = if tls { 443 } else { 80 };
    let Some((name, port)) = split_authority(host, default_port) else {
        return false;
    };
    if port == local.port() && is_loopback_host(&name) {
        return true;
    }
    allowed.iter().any(|a| {
        split_origin(a).is_some_and(|(_, h, p)| h == name && (p == port || !host.contains(':')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_origins_are_judged_by_the_listen_address() {
        let l = local("127.0.0.1:8000");
        let none: &[String] = &[];
        for ok in [
            "http://127.0.0.1:8000",
            "http://localhost:8000",
            "http://[::1]:8000",
            "HTTP://LocalHost:8000",
        ] {
            assert!(origin_allowed(ok, l, false, none), "{ok}");
        }
        for bad in [
            "http://evil.example:8000",
            "http://127.0.0.1:8001",
            "https://127.0.0.1:8000",
            "null",
            "http://127.0.0.1:8000.evil.example",
            "http://localhost.evil.example:8000",
        ] {
            assert!(!origin_allowed(bad, l, false, none), "{bad}");
        }
        let remote = local("10.0.0.5:8000");
        assert!(origin_allowed("http://10.0.0.5:8000", remote, false, none));
        assert!(!origin_allowed(
            "http://localhost:8000",
            remote,
            false,
            none
        ));
        let listed = vec!["https://hub.example.com".to_string()];
        assert!(origin_allowed(
            "https://hub.example.com:443",
            remote,
            false,
            &listed
        ));
        assert!(!origin_allowed(
            "https://hub.example.com:8443",
            remote,
            false,
            &listed
        ));
    }

    #[test]
    fn loopback_mode_serves_loopback_hosts_and_declared_ones_only() {
        let l = local("127.0.0.1:8000");
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "[::1]:8000",
            "127.1.2.3:8000",
        ] {
            assert!(host_allowed(ok, l, false, none), "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "localhost:8001",
            "localhost",
            "127.0.0.1.evil.example:8000",
            "",
            "caf\u{e9}:8000",
        ] {
            assert!(!host_allowed(bad, l, false, none), "{bad}");
        }
        let listed = vec!["https://hub.example.com".to_string()];
        assert!(host_allowed("hub.example.com", l, false, &listed));
        assert!(host_allowed("hub.example.com:443", l, false, &listed));
        assert!(!host_allowed("other.example.com", l, false, &listed));
    }
}
