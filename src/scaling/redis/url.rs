//! `redis://` and `rediss://` URLs: parsed, and shown without their secrets.

use super::LinkError;

/// Parsed `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`.
    pub tls: bool,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, LinkError> {
        let bad = |why: &str| LinkError::InvalidUrl(format!("{why} in {:?}", redact_raw(url)));
        let (rest, tls) = if let Some(rest) = url.strip_prefix("redis://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (rest, true)
        } else {
            return Err(bad("expected redis:// or rediss://"));
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(bad("query parameters are not supported"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((ui, hp)) => (Some(ui), hp),
            None => (None, authority),
        };
        let (username, password) = credentials(userinfo).map_err(bad)?;
        let (host, port) = host_and_port(hostport).map_err(bad)?;
        let db = match path {
            "" => 0,
            p => p.parse::<u32>().map_err(|_| bad("bad database number"))?,
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            username,
            password,
            db,
            tls,
        })
    }

    /// The URL with the password masked, for logs and `ferrocast config`.
    pub fn redacted(&self) -> String {
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            _ => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.db)
    }
}

type Credentials = (Option<String>, Option<String>);

/// `[user]:password` (or nothing) from the userinfo part.
fn credentials(userinfo: Option<&str>) -> Result<Credentials, &'static str> {
    let Some(ui) = userinfo.filter(|ui| !ui.is_empty()) else {
        return Ok((None, None));
    };
    let Some((user, pass)) = ui.split_once(':') else {
        return Err("user name without password (use redis://:password@host)");
    };
    let user = percent_decode(user).ok_or("bad escape")?;
    let pass = percent_decode(pass).ok_or("bad escape")?;
    if !user.is_empty() && pass.is_empty() {
        return Err("user name without password");
    }
    Ok((
        (!user.is_empty()).then_some(user),
        (!pass.is_empty()).then_some(pass),
    ))
}

/// `host[:port]` or `[v6][:port]`; the port defaults to 6379.
fn host_and_port(hostport: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or("unclosed [")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "invalid IPv6 address")?;
        match rest {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or("bad port")?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("bad port")?,
    };
    Ok((host, port))
}

fn redact_raw(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &url[..s + 3], &url[a..]),
        _ => url.to_string(),
    }
}

/// A userinfo part: every `%` must start a `%XX` escape (a URL with a stray `%` is refused
/// rather than guessed at), then decoded.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| crate::query::decode_part(s)).flatten()
}
