//! Addresses in the model: portal listen addresses, initiator networks, iSNS servers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The iSCSI port (RFC 7143 §13.6: 3260).
pub const DEFAULT_PORT: u16 = 3260;

/// Why an address does not parse: what is wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    pub problem: String,
    pub fix: String,
}

fn err(problem: String, fix: impl Into<String>) -> AddrError {
    AddrError {
        problem,
        fix: fix.into(),
    }
}

fn parse_port(s: &str, whole: &str) -> Result<u16, AddrError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            format!("{whole:?}: port {s:?} is not a number"),
            "write the port as digits after a colon, e.g. \":3260\", or leave it out for 3260",
        ));
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(err(
            format!("{whole:?}: port {s} is not between 1 and 65535"),
            "use a port from 1 to 65535 (iSCSI's is 3260)",
        )),
        Ok(p) => Ok(p),
    }
}

/// A portal listen address: `a.b.c.d[:port]` or `[v6][:port]`; the port defaults to
/// 3260. Host names are refused: a portal listens on an address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, AddrError> {
    let form = "write an IPv4 address (\"192.0.2.10:3260\", \"0.0.0.0\" for every IPv4 address) \
                or an IPv6 address in brackets (\"[2001:db8::10]:3260\", \"[::]\" for every address)";
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(err(format!("{s:?} has no closing ']'"), form));
        };
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| err(format!("{s:?}: {inside:?} is not an IPv6 address"), form))?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => match p.strip_prefix(':') {
                Some(p) => parse_port(p, s)?,
                None => return Err(err(format!("{s:?}: unexpected text after ']'"), form)),
            },
        };
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    if s.matches(':').count() > 1 {
        let fix = match s.parse::<Ipv6Addr>() {
            Ok(_) => format!("write IPv6 addresses in brackets: \"[{s}]:3260\""),
            Err(_) => form.to_owned(),
        };
        return Err(err(
            format!("{s:?}: an IPv6 address must be written in brackets"),
            fix,
        ));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, parse_port(p, s)?),
        None => (s, DEFAULT_PORT),
    };
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        err(
            format!("{s:?}: {host:?} is not an IP address (a portal listens on an address, not a host name)"),
            form,
        )
    })?;
    Ok(SocketAddr::new(IpAddr::V4(ip), port))
}

/// An initiator network: CIDR (`192.168.1.0/24`, `2001:db8::/32`) or a single address
/// (`/32` or `/128`). Returns the network with host bits cleared and whether the
/// written form had host bits set (worth a warning: `192.168.1.7/24` means the /24).
pub fn parse_network(s: &str) -> Result<(IpNet, bool), AddrError> {
    let fix = "write a network in CIDR form (\"192.168.1.0/24\", \"2001:db8::/32\") or a single address (\"192.168.1.7\")";
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| err(format!("{s:?} is not a network in CIDR form"), fix))?
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| err(format!("{s:?} is not an IP address or a network"), fix))?;
        IpNet::from(ip)
    };
    let trunc = net.trunc();
    Ok((trunc, trunc != net))
}

/// An iSNS server: `host`, `host:port`, `a.b.c.d[:port]`, `[v6][:port]` or a bare IPv6
/// address. Returns it unchanged when valid.
pub fn check_isns_server(s: &str) -> Result<(), AddrError> {
    let fix = "write \"host\", \"host:port\", \"192.0.2.5:3205\" or \"[2001:db8::5]:3205\"";
    if s.starts_with('[') {
        return parse_listen(s).map(|_| ()).map_err(|e| err(e.problem, fix));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        parse_port(p, s).map_err(|e| err(e.problem, fix))?;
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty()
        || host.len() > 253
        || !host.trim_end_matches('.').split('.').all(valid_label)
    {
        return Err(err(
            format!("{s:?} is not a host name or an IP address"),
            fix,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok: &[(&str, &str)] = &[
            ("0.0.0.0", "0.0.0.0:3260"),
            ("192.0.2.10:3261", "192.0.2.10:3261"),
            ("[::]", "[::]:3260"),
            ("[::]:3260", "[::]:3260"),
            ("[2001:db8::1]:860", "[2001:db8::1]:860"),
        ];
        for (s, want) in ok {
            assert_eq!(parse_listen(s).unwrap().to_string(), *want, "{s}");
        }
        for s in [
            "::",
            "2001:db8::1",
            "host.example.com",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "1.2.3.4:",
            "1.2.3.4:+5",
            "[::1",
            "[::1]x",
            "[1.2.3.4]",
            "256.0.0.1",
            "",
        ] {
            assert!(parse_listen(s).is_err(), "{s}");
        }
        assert!(parse_listen("::")
            .unwrap_err()
            .fix
            .contains("\"[::]:3260\""));
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("192.168.1.0/24").unwrap(),
            ("192.168.1.0/24".parse().unwrap(), false)
        );
        assert_eq!(
            parse_network("192.168.1.7").unwrap(),
            ("192.168.1.7/32".parse().unwrap(), false)
        );
        assert_eq!(
            parse_network("2001:db8::1").unwrap(),
            ("2001:db8::1/128".parse().unwrap(), false)
        );
        assert_eq!(
            parse_network("192.168.1.7/24").unwrap(),
            ("192.168.1.0/24".parse().unwrap(), true)
        );
        for s in ["192.168.1.0/33", "10.0.0.0/", "example.com", "10.0.0", ""] {
            assert!(parse_network(s).is_err(), "{s}");
        }
    }

    #[test]
    fn isns_servers() {
        for s in [
            "isns.example.com",
            "isns:3205",
            "192.0.2.5",
            "192.0.2.5:3205",
            "[2001:db8::5]:3205",
            "2001:db8::5",
        ] {
            assert!(check_isns_server(s).is_ok(), "{s}");
        }
        for s in ["", "bad host", "isns:0", "-x.example", "[::1"] {
            assert!(check_isns_server(s).is_err(), "{s}");
        }
    }
}
