//! The real client address behind a reverse proxy (Apache's mod_proxy adds `X-Forwarded-For`).
//!
//! The header is believed only when the TCP peer is a configured proxy; then it is read from the
//! right, skipping further trusted proxies, so a client cannot forge its address by sending the
//! header itself (mod_proxy appends to what the client sent).

use std::net::IpAddr;

/// An address or CIDR range: `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    net: IpAddr,
    prefix: u8,
}

impl Trusted {
    pub fn parse(s: &str) -> Result<Trusted, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("trusted_proxies: \"{s}\" is not an IP address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("trusted_proxies: bad prefix length in \"{s}\""))?,
            None => max,
        };
        Ok(Trusted { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

pub fn parse_list(list: &[String]) -> Result<Vec<Trusted>, String> {
    list.iter().map(|s| Trusted::parse(s)).collect()
}

/// The client address: the right-most `X-Forwarded-For` entry that is not a trusted proxy,
/// when `peer` itself is trusted; otherwise `peer`.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Trusted]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for entry in header.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // Garbage in the chain: stop at the last address we could vouch for.
            return last;
        };
        if !is_trusted(ip) {
            return ip;
        }
        last = ip;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(list: &[&str]) -> Vec<Trusted> {
        parse_list(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let trusted = t(&["127.0.0.1", "10.0.0.0/8"]);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(stranger, Some("1.2.3.4"), &trusted), stranger);
        assert_eq!(
            client_ip(local, Some("1.2.3.4"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // The client forged "6.6.6.6"; Apache appended the real address.
        assert_eq!(
            client_ip(local, Some("6.6.6.6, 198.51.100.7, 10.1.2.3"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(local, None, &trusted), local);
        assert_eq!(client_ip(local, Some("junk"), &trusted), local);
    }

    #[test]
    fn cidr_and_v6() {
        let trusted = t(&["fd00::/8", "192.168.0.0/16"]);
        assert!(trusted[0].contains("fd12::1".parse().unwrap()));
        assert!(!trusted[0].contains("fe80::1".parse().unwrap()));
        assert!(trusted[1].contains("::ffff:192.168.4.4".parse().unwrap()));
        assert!(Trusted::parse("1.2.3.4/33").is_err());
        assert!(Trusted::parse("nope").is_err());
        assert!(t(&["0.0.0.0/0"])[0].contains("8.8.8.8".parse().unwrap()));
    }
}
