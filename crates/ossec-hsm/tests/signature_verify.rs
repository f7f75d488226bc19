//! Signatures made by the HSM key verify with ring against the public key in
//! `public_key_spki_der()`, tampered messages do not, and signing survives a
//! lost login (the key re-opens its session and logs in again).

mod common;

use ossec_hsm::softhsm::Curve;
use ossec_hsm::{HsmKey, Pkcs11Uri};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use rustls::sign::SigningKey;
use rustls::SignatureScheme;

#[test]
fn hsm_signatures_verify_with_ring_and_survive_logout() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "sigtest", "7777");
    token.generate_ec_key("signer", Curve::P256).unwrap();
    let key = HsmKey::open(&Pkcs11Uri::parse(&token.uri("signer")).unwrap(), "7777").unwrap();

    let spki = key.public_key_spki_der();
    let point = common::spki_key_bits(&spki);
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04, "uncompressed point");
    let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point);

    let msg = b"enrollment handshake transcript";
    let sig = key
        .sign(SignatureScheme::ECDSA_NISTP256_SHA256, msg)
        .unwrap();
    assert_eq!(sig[0], 0x30, "DER ECDSA-Sig-Value");
    verifier.verify(msg, &sig).expect("valid signature");
    assert!(verifier
        .verify(b"enrollment handshake transcripT", &sig)
        .is_err());
    let mut bad_sig = sig.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert!(verifier.verify(msg, &bad_sig).is_err());

    // Through the rustls traits.
    assert!(key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
        .is_none());
    let signer = key
        .choose_scheme(&[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ])
        .expect("P-256 scheme offered");
    assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    let sig2 = signer.sign(msg).unwrap();
    verifier
        .verify(msg, &sig2)
        .expect("valid rustls-path signature");
    assert_eq!(
        SigningKey::public_key(&key).unwrap().as_ref(),
        &spki[..],
        "rustls SigningKey::public_key is the SPKI"
    );

    // Lose the login: the next signature must re-open and log in again.
    let clone = key.clone();
    token.force_logout().unwrap();
    let before = key.signatures_made();
    let sig3 = clone
        .sign(SignatureScheme::ECDSA_NISTP256_SHA256, msg)
        .unwrap();
    verifier
        .verify(msg, &sig3)
        .expect("signature after re-login");
    assert_eq!(key.signatures_made(), before + 1);

    // Clones used from several threads at once share the one session safely.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let k = key.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let m = format!("thread {t} message {i}");
                        let s = k
                            .sign(SignatureScheme::ECDSA_NISTP256_SHA256, m.as_bytes())
                            .unwrap();
                        (m, s)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (m, s) in t.join().unwrap() {
            verifier
                .verify(m.as_bytes(), &s)
                .expect("concurrent signature");
        }
    }
    assert_eq!(key.signatures_made(), before + 41);
}
