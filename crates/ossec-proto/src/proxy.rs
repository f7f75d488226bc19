//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a
//! load balancer puts before a TCP connection's data to tell the real
//! client address. Parsing only, no I/O: [`parse`] takes the bytes seen so
//! far and says "incomplete", "done (header, length)" or why it is not a
//! valid header. Nothing here allocates by input size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that start a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 line, `\r\n` included (spec §2.1).
pub const V1_MAX: usize = 107;
/// Longest version 2 header accepted: the 16 fixed bytes, the addresses
/// and up to 1 KiB of TLVs (HAProxy sends far less).
pub const V2_MAX: usize = 16 + 216 + 1024;

/// Which versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    V1,
    V2,
    Any,
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, e.g. a health check) or an
    /// unknown/unsupported family (v1 `UNKNOWN`, v2 `UNSPEC`/UNIX): the
    /// connection's own peer address stays.
    Local,
}

/// Why the bytes are not a header the listener takes. `label()` is the
/// metric reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection does not start with a PROXY header at all.
    Missing,
    /// A version this listener does not accept.
    WrongVersion,
    /// Longer than the limits above.
    Oversized,
    /// A header, but broken.
    Malformed(&'static str),
}

impl ProxyError {
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::WrongVersion => "wrong_version",
            ProxyError::Oversized => "oversized",
            ProxyError::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::Missing => f.write_str("no PROXY protocol header"),
            ProxyError::WrongVersion => {
                f.write_str("PROXY protocol header of a version this listener does not accept")
            }
            ProxyError::Oversized => f.write_str("PROXY protocol header too long"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the start of a connection. `Ok(None)`: more bytes are needed;
/// `Ok(Some((header, n)))`: the header is the first `n` bytes.
pub fn parse(buf: &[u8], versions: Versions) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    const V1_START: &[u8] = b"PROXY ";
    let is_v2 = {
        let n = buf.len().min(V2_SIGNATURE.len());
        buf[..n] == V2_SIGNATURE[..n]
    };
    let is_v1 = {
        let n = buf.len().min(V1_START.len());
        buf[..n] == V1_START[..n]
    };
    match (is_v1, is_v2) {
        (false, false) => Err(ProxyError::Missing),
        (true, true) => Ok(None), // nothing read yet
        (true, false) if versions == Versions::V2 => Err(ProxyError::WrongVersion),
        (false, true) if versions == Versions::V1 => Err(ProxyError::WrongVersion),
        (true, false) => parse_v1(buf),
        (false, true) => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::Oversized);
        }
        return Ok(None);
    };
    let n = end + 2;
    if n > V1_MAX {
        return Err(ProxyError::Oversized);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut f = line.split(' ');
    let _proxy = f.next();
    let header = match f.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(fam @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(dst), Some(sp), Some(dp), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(ProxyError::Malformed("expected 4 fields after the family"));
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| ProxyError::Malformed("bad address"))?;
                match (fam, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyError::Malformed("address of the wrong family")),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                if s.is_empty() || s.len() > 5 || (s.len() > 1 && s.starts_with('0')) {
                    return Err(ProxyError::Malformed("bad port"));
                }
                s.parse().map_err(|_| ProxyError::Malformed("bad port"))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(src)?, port(sp)?),
                destination: SocketAddr::new(ip(dst)?, port(dp)?),
            }
        }
        _ => return Err(ProxyError::Malformed("unknown family")),
    };
    Ok(Some((header, n)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(None);
    };
    let ver_cmd = fixed[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let n = 16 + len;
    if n > V2_MAX {
        return Err(ProxyError::Oversized);
    }
    let Some(body) = buf.get(16..n) else {
        return Ok(None);
    };
    let header = match ver_cmd & 0x0f {
        0 => ProxyHeader::Local,
        1 => match fixed[13] {
            // TCP over IPv4 / IPv6 (UDP over them is not a TCP listener's).
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or(ProxyError::Malformed("IPv4 addresses cut short"))?;
                let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            0x21 => {
                let a = body
                    .get(..36)
                    .ok_or(ProxyError::Malformed("IPv6 addresses cut short"))?;
                let ip = |i: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&a[i..i + 16]);
                    IpAddr::V6(Ipv6Addr::from(o))
                };
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            // UNSPEC, UNIX, or datagram families: keep the peer address.
            _ => ProxyHeader::Local,
        },
        _ => return Err(ProxyError::Malformed("unknown command")),
    };
    Ok(Some((header, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_examples_from_the_spec() {
        let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        assert_eq!(
            parse(h, Versions::Any),
            Ok(Some((
                ProxyHeader::Proxied {
                    source: sa("192.168.0.1:56324"),
                    destination: sa("192.168.0.11:443")
                },
                47
            )))
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1514 1514\r\n";
        assert!(matches!(
            parse(h6, Versions::V1),
            Ok(Some((ProxyHeader::Proxied { source, .. }, 46))) if source == sa("[2001:db8::1]:1514")
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", Versions::Any),
            Ok(Some((ProxyHeader::Local, 15)))
        );
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX - 3);
        assert!(parse(longest, Versions::Any).unwrap().is_some());
    }

    #[test]
    fn v1_incomplete_and_broken() {
        let full = b"PROXY TCP4 10.0.0.1 10.0.0.2 40000 1514\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut], Versions::Any), Ok(None), "cut at {cut}");
        }
        let bad: [&[u8]; 8] = [
            b"PROXY TCP4 10.0.0.1 10.0.0.2 40000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 40000 1514 x\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.2 40000 1514\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 70000 1514\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 040 1514\r\n",
            b"PROXY UDP4 10.0.0.1 10.0.0.2 40000 1514\r\n",
            b"PROXY TCP4 999.0.0.1 10.0.0.2 40000 1514\r\n",
            b"PROXY TCP4 \xff 10.0.0.2 40000 1514\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse(b, Versions::Any), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&endless, Versions::Any), Err(ProxyError::Oversized));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Versions::Any),
            Err(ProxyError::Missing)
        );
        assert_eq!(
            parse(b"\x6a\x00\x00\x00!001!", Versions::Any),
            Err(ProxyError::Missing)
        );
        assert_eq!(parse(full, Versions::V2), Err(ProxyError::WrongVersion));
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v2_golden_bytes() {
        // PROXY TCP4 127.0.0.11:40000 -> 127.0.0.1:1514, plus a TLV
        // (PP2_TYPE_NOOP, 3 bytes) that is skipped.
        let mut body = vec![127, 0, 0, 11, 127, 0, 0, 1, 0x9c, 0x40, 0x05, 0xea];
        body.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
        let h = v2(1, 0x11, &body);
        assert_eq!(
            h[..16],
            [
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
                0x00, 0x12
            ]
        );
        let mut with_data = h.clone();
        with_data.extend_from_slice(b"\x6a\x00\x00\x00");
        assert_eq!(
            parse(&with_data, Versions::V2),
            Ok(Some((
                ProxyHeader::Proxied {
                    source: sa("127.0.0.11:40000"),
                    destination: sa("127.0.0.1:1514")
                },
                h.len()
            )))
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut], Versions::Any), Ok(None), "cut at {cut}");
        }
        let mut b6 = Vec::new();
        b6.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&[0x04, 0xd2, 0x05, 0xea]);
        assert!(matches!(
            parse(&v2(1, 0x21, &b6), Versions::Any),
            Ok(Some((ProxyHeader::Proxied { source, .. }, 52))) if source == sa("[2001:db8::5]:1234")
        ));
        // LOCAL (health checks) and UNSPEC keep the peer address.
        assert_eq!(
            parse(&v2(0, 0x00, &[]), Versions::Any),
            Ok(Some((ProxyHeader::Local, 16)))
        );
        assert_eq!(
            parse(&v2(1, 0x00, &[]), Versions::Any),
            Ok(Some((ProxyHeader::Local, 16)))
        );
    }

    #[test]
    fn v2_broken() {
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3]), Versions::Any),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x21, &[0; 20]), Versions::Any),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(7, 0x11, &[0; 12]), Versions::Any),
            Err(ProxyError::Malformed(_))
        ));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse(&wrong_version, Versions::Any),
            Err(ProxyError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge, Versions::Any), Err(ProxyError::Oversized));
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 12]), Versions::V1),
            Err(ProxyError::WrongVersion)
        );
    }
}
