//! A private key whose public key object was deleted: opening either still
//! finds the same public key from the private key's attributes, or fails with
//! a clear "finding the public key" error (depending on what the module
//! exposes).

mod common;

use ossec_hsm::softhsm::Curve;
use ossec_hsm::{HsmError, HsmKey, Pkcs11Uri};

#[test]
fn private_key_without_public_object() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "nopub", "3333");
    token.generate_ec_key("lonely", Curve::P256).unwrap();
    let uri = Pkcs11Uri::parse(&token.uri("lonely")).unwrap();
    let spki = HsmKey::open(&uri, "3333").unwrap().public_key_spki_der();
    assert_eq!(token.delete_public_key("lonely").unwrap(), 1);
    match HsmKey::open(&uri, "3333") {
        Ok(key) => assert_eq!(key.public_key_spki_der(), spki),
        Err(e) => {
            assert!(matches!(e, HsmError::PublicKey { .. }), "{e:?}");
            assert!(e.to_string().contains("lonely"), "{e}");
            eprintln!("module gives no public key from the private key: {e}");
        }
    }
}
