//! Enrollment client (port 1515, TLS), as a Wazuh 4.x agent enrolls before
//! it talks to 1514: one TLS connection, one request line, one answer.
//!
//! Owns the TLS client setup (like the Wazuh agent without
//! `server_ca_path`: the server certificate is not checked against a CA,
//! but the handshake signature is verified; with a CA it is checked), the
//! request/answer exchange (formats from `ossec_proto::enroll`) and
//! enrolling many agents at once with retries.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use ossec_proto::enroll;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Accepts any server certificate but still verifies that the server holds
/// its key (the handshake signature), as an agent without a CA does.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Talks to one enrollment server.
#[derive(Clone)]
pub struct EnrollClient {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    password: Option<String>,
    timeout: Duration,
}

/// One agent's key as the server returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledKey {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub key: String,
}

impl EnrolledKey {
    /// The `client.keys` line (with `\n`).
    pub fn line(&self) -> String {
        format!("{} {} {} {}\n", self.id, self.name, self.ip, self.key)
    }
}

impl EnrollClient {
    /// A client for `addr`. With `ca`, the server certificate must chain to
    /// it and name `server_name`; without, any certificate is taken.
    /// `versions` picks TLS 1.2 and/or 1.3 (empty: both).
    pub fn new(
        addr: SocketAddr,
        password: Option<String>,
        ca: Option<&Path>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> anyhow::Result<Self> {
        Self::with_identity(addr, password, ca, versions, None)
    }

    /// As [`EnrollClient::new`], presenting a client certificate (chain and
    /// key) when given, as agents do with `agent_certificate_path`.
    pub fn with_identity(
        addr: SocketAddr,
        password: Option<String>,
        ca: Option<&Path>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        identity: Option<(
            Vec<CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )>,
    ) -> anyhow::Result<Self> {
        let config = client_config(ca, versions, identity)?;
        Ok(EnrollClient {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            password,
            timeout: Duration::from_secs(15),
        })
    }

    /// Sends `line` as it is over a new TLS connection and returns
    /// everything the server answers before it closes.
    pub async fn exchange(&self, line: &[u8]) -> anyhow::Result<Vec<u8>> {
        let fut = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            let name = ServerName::try_from("ossec-collector").map_err(|e| anyhow!("{e}"))?;
            let mut tls = self
                .connector
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {} failed", self.addr))?;
            tls.write_all(line).await?;
            tls.flush().await?;
            let mut answer = Vec::new();
            // A server that closes without close_notify still answered.
            match tls.read_to_end(&mut answer).await {
                Ok(_) => {}
                Err(e) if !answer.is_empty() => tracing::debug!("enrollment read ended: {e}"),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e.into()),
            }
            anyhow::Ok(answer)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| anyhow!("no answer from {} within {:?}", self.addr, self.timeout))?
    }

    /// Enrolls one agent as a Wazuh 4.14 agent asks (`V:` and, if given,
    /// `G:`/`IP:`/`K:`). A refusal is an error with the server's words.
    pub async fn enroll(
        &self,
        name: &str,
        groups: &[&str],
        ip: Option<&str>,
        key_hash: Option<&str>,
    ) -> anyhow::Result<EnrolledKey> {
        let line = enroll::format_request(
            self.password.as_deref(),
            name,
            Some("v4.14.7"),
            groups,
            ip,
            key_hash,
        );
        let answer = self.exchange(&line).await?;
        let (id, name, ip, key) = enroll::parse_answer(&answer).map_err(|e| anyhow!("{e}"))?;
        Ok(EnrolledKey { id, name, ip, key })
    }
}

/// The TLS client configuration of an agent: with `ca`, the server
/// certificate must chain to it; without, any certificate is taken (the
/// handshake signature is still verified). `versions` empty: TLS 1.2 and 1.3.
pub fn client_config(
    ca: Option<&Path>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = if versions.is_empty() {
        &[&rustls::version::TLS13, &rustls::version::TLS12][..]
    } else {
        versions
    };
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("TLS versions")?;
    let b = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::pem::PemObject::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                let c: CertificateDer<'static> =
                    c.with_context(|| format!("{} is not PEM", ca.display()))?;
                roots.add(c).context("not a usable CA certificate")?;
            }
            b.with_root_certificates(roots)
        }
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
    };
    let config = match identity {
        Some((chain, key)) => b
            .with_client_auth_cert(chain, key)
            .context("the client certificate and key do not fit")?,
        None => b.with_no_client_auth(),
    };
    Ok(config)
}

/// Enrolls `names` with at most `parallel` at once; a connection error is
/// retried up to 5 times (as agents retry), a refusal is not.
pub async fn enroll_many(
    client: &EnrollClient,
    names: Vec<String>,
    parallel: usize,
) -> anyhow::Result<Vec<EnrolledKey>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut delay = Duration::from_millis(100);
            for attempt in 1..=5 {
                match client.enroll(&name, &[], None, None).await {
                    Ok(k) => return Ok(k),
                    Err(e) if e.to_string().starts_with("ERROR: ") || attempt == 5 => {
                        return Err(e.context(format!("enrolling {name}")))
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
            Err(anyhow!("enrolling {name}: gave up"))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| anyhow!("enrollment task failed: {e}"))??,
        );
    }
    Ok(out)
}
