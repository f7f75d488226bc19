//! P-256 key generated on a SoftHSM token, opened through a PKCS#11 URI,
//! used for a self-signed certificate and real TLS 1.3 and TLS 1.2 (ECDHE-ECDSA)
//! handshakes over loopback TCP.

mod common;

use ossec_hsm::softhsm::Curve;
use ossec_hsm::{self_signed_certificate, HsmKey, KeyAlgorithm, Pkcs11Uri};
use rustls::crypto::ring::default_provider;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_key_in_hsm_serves_tls13_and_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "collector", "4321");
    token.generate_ec_key("enroll", Curve::P256).unwrap();

    let uri = Pkcs11Uri::parse(&token.uri("enroll")).unwrap();
    let key = HsmKey::open(&uri, "4321").unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
    assert_eq!(key.label(), "enroll");
    assert_eq!(key.token_label(), "collector");
    assert!(
        !format!("{key:?}").contains("4321"),
        "Debug must not show the PIN"
    );

    let signed_before_cert = key.signatures_made();
    let cert = self_signed_certificate(&key, vec!["localhost".to_string()]).unwrap();
    assert_eq!(
        key.signatures_made(),
        signed_before_cert + 1,
        "rcgen signed via the HSM"
    );
    assert_eq!(common::cert_spki(&cert), key.public_key_spki_der());

    // TLS 1.3.
    let before = key.signatures_made();
    let out = common::tls_exchange(&key, &cert, &rustls::version::TLS13, default_provider()).await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(out.server_received, "hello from client\n");
    assert_eq!(out.client_received, "hello from server\n");
    assert_eq!(out.server_cert, cert);
    assert_eq!(
        common::cert_spki(&out.server_cert),
        key.public_key_spki_der()
    );
    assert_eq!(
        key.signatures_made(),
        before + 1,
        "CertificateVerify signed by the HSM"
    );

    // TLS 1.2 with an ECDHE-ECDSA suite.
    let before = key.signatures_made();
    let out = common::tls_exchange(
        &key,
        &cert,
        &rustls::version::TLS12,
        common::tls12_ecdsa_provider(),
    )
    .await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_2);
    assert!(
        format!("{:?}", out.suite).contains("ECDHE_ECDSA"),
        "suite {:?}",
        out.suite
    );
    assert_eq!(out.server_received, "hello from client\n");
    assert_eq!(out.client_received, "hello from server\n");
    assert_eq!(
        common::cert_spki(&out.server_cert),
        key.public_key_spki_der()
    );
    assert_eq!(
        key.signatures_made(),
        before + 1,
        "ServerKeyExchange signed by the HSM"
    );
}
