//! The client chain named by a request's forwarding headers (`Forwarded`, `X-Forwarded-For`,
//! `X-Real-IP`), judged strictly: every element must be an address, and one that is not (bytes
//! that are not ASCII, `unknown`, an obfuscated `_node`, garbage, an empty element) counts as a
//! remote client. Pure parsing of header bytes; knows nothing of HTTP frameworks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an element naming no address stands for: a client that is not loopback.
pub const NOT_AN_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The forwarding headers amihub reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// RFC 7239 `Forwarded: for=…;proto=…, for=…`.
    Forwarded,
    /// `X-Forwarded-For: client, proxy1, …` (what nginx and Apache append to).
    XForwardedFor,
    /// `X-Real-IP: client`.
    XRealIp,
}

impl Header {
    pub const ALL: [Header; 3] = [Header::Forwarded, Header::XForwardedFor, Header::XRealIp];

    pub fn name(self) -> &'static str {
        match self {
            Header::Forwarded => "forwarded",
            Header::XForwardedFor => "x-forwarded-for",
            Header::XRealIp => "x-real-ip",
        }
    }
}

/// 127.0.0.0/8 and ::1, also IPv4-mapped (`::ffff:127.0.0.1`, what a dual-stack listener sees).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Every client address one header value names, in order; [`NOT_AN_ADDRESS`] for each element
/// that is not an address (and for a value that is not ASCII or is empty).
pub fn addresses(header: Header, value: &[u8]) -> Vec<IpAddr> {
    let Some(text) = std::str::from_utf8(value).ok().filter(|t| t.is_ascii()) else {
        return vec![NOT_AN_ADDRESS];
    };
    let mut out = Vec::new();
    for element in text.split(',').map(str::trim) {
        match header {
            Header::Forwarded => forwarded_element(element, &mut out),
            Header::XForwardedFor | Header::XRealIp => out.push(node(element)),
        }
    }
    out
}

/// One `Forwarded` element (`for=…;by=…;proto=…`): its `for` is judged; a pair without `=` is
/// not a valid element, so it counts as a remote client too.
fn forwarded_element(element: &str, out: &mut Vec<IpAddr>) {
    if element.is_empty() {
        out.push(NOT_AN_ADDRESS);
        return;
    }
    for pair in element.split(';').map(str::trim) {
        match pair.split_once('=') {
            Some((key, value)) if key.trim().eq_ignore_ascii_case("for") => out.push(node(value)),
            Some(_) => {}
            None => out.push(NOT_AN_ADDRESS),
        }
    }
}

/// A node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, maybe
/// quoted.
fn node(value: &str) -> IpAddr {
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    let port_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = v.strip_prefix('[') {
        let Some((ip, tail)) = rest.split_once(']') else {
            return NOT_AN_ADDRESS;
        };
        let tail_ok = tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok);
        return match ip.parse::<Ipv6Addr>() {
            Ok(ip) if tail_ok => IpAddr::V6(ip),
            _ => NOT_AN_ADDRESS,
        };
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return ip;
    }
    match v.split_once(':') {
        Some((ip, port)) if port_ok(port) => {
            ip.parse::<Ipv4Addr>().map_or(NOT_AN_ADDRESS, IpAddr::V4)
        }
        _ => NOT_AN_ADDRESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_loopback(h: Header, v: &[u8]) -> bool {
        addresses(h, v).into_iter().all(is_loopback)
    }

    #[test]
    fn addresses_in_every_form_parse() {
        let x = |v: &str| addresses(Header::XForwardedFor, v.as_bytes());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            x("127.0.0.1, 10.0.0.1:80 ,::1,[2001:db8::1]:4711"),
            vec![
                ip("127.0.0.1"),
                ip("10.0.0.1"),
                ip("::1"),
                ip("2001:db8::1")
            ]
        );
        assert_eq!(
            addresses(
                Header::Forwarded,
                b"for=127.0.0.1;proto=http, For=\"[::1]:80\";by=x"
            ),
            vec![ip("127.0.0.1"), ip("::1")]
        );
        assert!(all_loopback(Header::XRealIp, b"127.0.0.9"));
    }

    #[test]
    fn anything_that_is_not_an_address_is_remote() {
        for v in [
            &b"\xff"[..],
            b"\xff, 127.0.0.1",
            "café, 127.0.0.1".as_bytes(),
            b"",
            b"unknown",
            b"127.0.0.1, , 127.0.0.1",
            b"127.0.0.1 203.0.113.5",
            b"127.0.0.1:x",
            b"[::1",
            b"[::1]x",
            b"localhost",
            b"a=b, 127.0.0.1",
        ] {
            assert!(
                !all_loopback(Header::XForwardedFor, v),
                "{:?} passed as loopback",
                String::from_utf8_lossy(v)
            );
        }
        for v in [
            &b"for=_hidden"[..],
            b"for=unknown",
            b"for=127.0.0.1;garbage",
            b"for=127.0.0.1, ",
            b"for=\"127.0.0.1\xff\"",
            "for=127.0.0.1;x=é".as_bytes(),
        ] {
            assert!(
                !all_loopback(Header::Forwarded, v),
                "Forwarded {:?} passed as loopback",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback(NOT_AN_ADDRESS));
    }
}
