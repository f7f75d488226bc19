//! RSA-2048 keys on the token: PSS (TLS 1.3) and PKCS#1 v1.5 signatures that
//! ring verifies, a certificate, and TLS 1.3 / TLS 1.2 (ECDHE-RSA) handshakes.

mod common;

use ossec_hsm::{self_signed_certificate, HsmKey, KeyAlgorithm, Pkcs11Uri};
use ring::signature::{
    UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384,
    RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA512,
};
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::SignatureScheme;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_in_hsm_works() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "rsa", "5555");
    token.generate_rsa_key("enroll-rsa", 2048).unwrap();
    let key = HsmKey::open(&Pkcs11Uri::parse(&token.uri("enroll-rsa")).unwrap(), "5555").unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });

    let spki = key.public_key_spki_der();
    let rsa_public = common::spki_key_bits(&spki);
    assert_eq!(rsa_public, key.public_key_raw());
    let msg = b"rsa message";
    for (scheme, alg) in [
        (SignatureScheme::RSA_PSS_SHA256, &RSA_PSS_2048_8192_SHA256),
        (SignatureScheme::RSA_PSS_SHA512, &RSA_PSS_2048_8192_SHA512),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &RSA_PKCS1_2048_8192_SHA384,
        ),
    ] {
        let sig = key.sign(scheme, msg).unwrap();
        assert_eq!(sig.len(), 256);
        let v = UnparsedPublicKey::new(alg, &rsa_public);
        v.verify(msg, &sig)
            .unwrap_or_else(|_| panic!("{scheme:?} signature must verify"));
        assert!(
            v.verify(b"rsa messagE", &sig).is_err(),
            "{scheme:?} tampered"
        );
    }
    assert!(key
        .sign(SignatureScheme::ECDSA_NISTP256_SHA256, msg)
        .is_err());

    let cert = self_signed_certificate(&key, vec!["localhost".to_string()]).unwrap();
    assert_eq!(common::cert_spki(&cert), spki);

    let out = common::tls_exchange(&key, &cert, &rustls::version::TLS13, default_provider()).await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(out.client_received, "hello from server\n");
    assert_eq!(out.server_received, "hello from client\n");
    assert_eq!(common::cert_spki(&out.server_cert), spki);

    use rustls::crypto::ring::cipher_suite as cs;
    let tls12_rsa = CryptoProvider {
        cipher_suites: vec![
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    };
    let out = common::tls_exchange(&key, &cert, &rustls::version::TLS12, tls12_rsa).await;
    assert_eq!(out.version, rustls::ProtocolVersion::TLSv1_2);
    assert!(
        format!("{:?}", out.suite).contains("ECDHE_RSA"),
        "{:?}",
        out.suite
    );
    assert_eq!(out.client_received, "hello from server\n");
}
