//! P-384 keys work end to end: certificate, TLS 1.3 and 1.2 handshakes, and
//! signatures that ring verifies with ECDSA_P384_SHA384_ASN1.

mod common;

use ossec_hsm::softhsm::Curve;
use ossec_hsm::{self_signed_certificate, HsmKey, KeyAlgorithm, Pkcs11Uri};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_ASN1};
use rustls::crypto::ring::default_provider;
use rustls::SignatureScheme;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p384_key_in_hsm_works() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "p384", "0000");
    token.generate_ec_key("enroll-384", Curve::P384).unwrap();
    let key = HsmKey::open(&Pkcs11Uri::parse(&token.uri("enroll-384")).unwrap(), "0000").unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP384);

    let spki = key.public_key_spki_der();
    let point = common::spki_key_bits(&spki);
    assert_eq!(point.len(), 97);
    let msg = b"p-384 message";
    let sig = key
        .sign(SignatureScheme::ECDSA_NISTP384_SHA384, msg)
        .unwrap();
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &point)
        .verify(msg, &sig)
        .expect("ring verifies the HSM's P-384 signature");
    assert!(UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &point)
        .verify(b"p-384 messagf", &sig)
        .is_err());
    assert!(key
        .sign(SignatureScheme::ECDSA_NISTP256_SHA256, msg)
        .is_err());

    let cert = self_signed_certificate(&key, vec!["localhost".to_string()]).unwrap();
    let out = common::tls_exchange(&key, &cert, &rustls::version::TLS13, default_provider()).await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(out.client_received, "hello from server\n");
    assert_eq!(out.server_received, "hello from client\n");
    assert_eq!(common::cert_spki(&out.server_cert), spki);

    let out = common::tls_exchange(
        &key,
        &cert,
        &rustls::version::TLS12,
        common::tls12_ecdsa_provider(),
    )
    .await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(out.client_received, "hello from server\n");
}
