//! Shared helpers for the SoftHSM integration tests: token setup that fails
//! (never skips) without SoftHSM2, a loopback TLS exchange through tokio-rustls
//! with the HSM key on the server side, and SPKI helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ossec_hsm::softhsm::{self, TestToken};
use ossec_hsm::{certified_key, HsmKey};
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Creates a SoftHSM token in `dir`; panics with the install hint if
/// SoftHSM2 is missing (tests must fail, not skip).
pub fn token(dir: &Path, label: &str, pin: &str) -> TestToken {
    softhsm::require_module_path();
    TestToken::create(dir, label, pin).unwrap_or_else(|e| {
        panic!(
            "creating SoftHSM test token failed: {e} (is SoftHSM2 installed? {})",
            softhsm::INSTALL_HINT
        )
    })
}

/// What one TLS exchange observed.
pub struct Outcome {
    pub version: rustls::ProtocolVersion,
    pub suite: rustls::CipherSuite,
    pub server_cert: CertificateDer<'static>,
    pub server_received: String,
    pub client_received: String,
}

/// Runs a TLS server on 127.0.0.1 whose key is `key` (cert chain `[cert]`),
/// connects a rustls client that trusts exactly `cert`, and exchanges one
/// line each way. `client_provider` lets a test restrict the client's suites.
pub async fn tls_exchange(
    key: &HsmKey,
    cert: &CertificateDer<'static>,
    version: &'static SupportedProtocolVersion,
    client_provider: CryptoProvider,
) -> Outcome {
    tokio::time::timeout(
        Duration::from_secs(20),
        tls_exchange_inner(key, cert, version, client_provider),
    )
    .await
    .expect("TLS exchange timed out")
}

async fn tls_exchange_inner(
    key: &HsmKey,
    cert: &CertificateDer<'static>,
    version: &'static SupportedProtocolVersion,
    client_provider: CryptoProvider,
) -> Outcome {
    let ck = certified_key(key.clone(), vec![cert.clone()]);
    ck.keys_match()
        .expect("certificate's key must match the HSM key");
    let server_config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(ck)));

    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let client_config = ClientConfig::builder_with_provider(Arc::new(client_provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let tls = acceptor.accept(tcp).await?;
        let (r, mut w) = tokio::io::split(tls);
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await?;
        w.write_all(b"hello from server\n").await?;
        w.flush().await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(line)
    });

    let connector = TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the HSM-backed server failed");
    let (_, conn) = tls.get_ref();
    let version = conn.protocol_version().expect("negotiated version");
    let suite = conn.negotiated_cipher_suite().expect("suite").suite();
    let server_cert = conn.peer_certificates().expect("server certificate")[0].clone();

    let (r, mut w) = tokio::io::split(tls);
    w.write_all(b"hello from client\n").await.unwrap();
    w.flush().await.unwrap();
    let mut r = BufReader::new(r);
    let mut client_received = String::new();
    r.read_line(&mut client_received).await.unwrap();
    let server_received = server.await.unwrap().expect("server side failed");
    Outcome {
        version,
        suite,
        server_cert,
        server_received,
        client_received,
    }
}

/// The SubjectPublicKeyInfo inside a certificate.
pub fn cert_spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).expect("parse certificate");
    parsed.subject_public_key_info().as_ref().to_vec()
}

/// The subjectPublicKey BIT STRING content (minus the unused-bits byte) of
/// an SPKI, parsed by hand so it does not depend on the crate under test.
pub fn spki_key_bits(spki: &[u8]) -> Vec<u8> {
    fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = d[0];
        let (len, hdr) = if d[1] < 0x80 {
            (d[1] as usize, 2)
        } else {
            let n = (d[1] & 0x7f) as usize;
            (
                d[2..2 + n]
                    .iter()
                    .fold(0usize, |a, &b| (a << 8) | b as usize),
                2 + n,
            )
        };
        (tag, &d[hdr..hdr + len], &d[hdr + len..])
    }
    let (tag, seq, rest) = tlv(spki);
    assert_eq!(tag, 0x30);
    assert!(rest.is_empty());
    let (tag, _alg, rest) = tlv(seq);
    assert_eq!(tag, 0x30);
    let (tag, bits, rest) = tlv(rest);
    assert_eq!(tag, 0x03);
    assert!(rest.is_empty());
    assert_eq!(bits[0], 0, "no unused bits");
    bits[1..].to_vec()
}

/// The client's crypto provider restricted to TLS 1.2 ECDHE-ECDSA suites.
pub fn tls12_ecdsa_provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    }
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
