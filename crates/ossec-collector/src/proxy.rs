//! PROXY protocol on the TCP listeners (1514 and 1515), for collectors
//! behind HAProxy or an AWS NLB: which peers may send a header, reading
//! the header exactly (not one byte of the agent's own data), and the
//! agent's address it carries, which then stands for the agent everywhere
//! (key lookup by IP, `events.source_ip`, `agents.last_ip`, logs, limits).
//! Parsing is `ossec_proto::proxy`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ossec_proto::proxy::{self, ProxyHeader, Versions, V2_SIGNATURE};
use ossec_proto::AllowedAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a connection may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The ranges trusted by default: loopback and private networks.
pub const DEFAULT_FROM: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

/// `--proxy-protocol` and `--proxy-from`.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub versions: Versions,
    pub from: Vec<AllowedAddr>,
}

impl ProxySettings {
    /// Parses `--proxy-from` (comma-separated addresses or CIDRs).
    pub fn parse_from(list: &str) -> Result<Vec<AllowedAddr>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match AllowedAddr::parse(s) {
                Ok(AllowedAddr::Any) | Err(_) => Err(format!(
                    "proxy_from `{s}` is not an address or network (e.g. 10.0.0.0/8)"
                )),
                Ok(a) => Ok(a),
            })
            .collect()
    }

    /// Whether `peer` may send a header.
    pub fn trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.from.iter().any(|a| a.allows(peer))
    }
}

/// Reads the header at the start of `stream` (from a trusted peer) and
/// returns the agent's address: the header's source, or `peer` for a
/// `LOCAL`/`UNKNOWN` header. `Err` is the reason label for the metrics.
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    versions: Versions,
) -> Result<SocketAddr, &'static str> {
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        // Every header is at least 15 bytes: read 12 for a start, then
        // exactly what the header still needs (v2: its length field; v1:
        // one byte at a time up to `\r\n`), so the agent's data stays in
        // the socket for the listener.
        let mut need = V2_SIGNATURE.len();
        loop {
            let start = buf.len();
            buf.resize(start + need, 0);
            if stream.read_exact(&mut buf[start..]).await.is_err() {
                return Err("closed");
            }
            match proxy::parse(&buf, versions) {
                Ok(Some((ProxyHeader::Proxied { source, .. }, _))) => return Ok(source),
                Ok(Some((ProxyHeader::Local, _))) => return Ok(peer),
                Ok(None) if buf.starts_with(&V2_SIGNATURE) => {
                    need = match buf.get(14..16) {
                        Some(l) => 16 + usize::from(u16::from_be_bytes([l[0], l[1]])) - buf.len(),
                        None => 16 - buf.len(),
                    };
                }
                Ok(None) => need = 1,
                Err(e) => return Err(e.label()),
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .unwrap_or(Err("timeout"))
}

/// The agent's address on a new connection, or why the connection is
/// refused (counted by the caller): no PROXY settings, the peer itself;
/// otherwise a header from a trusted peer.
pub async fn agent_addr(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: Option<&ProxySettings>,
) -> Result<SocketAddr, &'static str> {
    match settings {
        None => Ok(peer),
        Some(s) if !s.trusted(peer.ip()) => Err("untrusted_peer"),
        Some(s) => read_header(stream, peer, s.versions).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_ranges() {
        let s = ProxySettings {
            versions: Versions::Any,
            from: ProxySettings::parse_from(DEFAULT_FROM).unwrap(),
        };
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(s.trusted(ok.parse().unwrap()), "{ok}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:db8::1"] {
            assert!(!s.trusted(no.parse().unwrap()), "{no}");
        }
        assert!(ProxySettings::parse_from("10.0.0.0/8,nonsense").is_err());
        assert!(ProxySettings::parse_from("any").is_err());
    }
}
