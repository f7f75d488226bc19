//! `TestToken::create` rules: several tokens may share the process's one
//! directory; another directory, or a duplicate label, is refused clearly.

mod common;

use ossec_hsm::softhsm::{Curve, TestToken, SOFTHSM2_CONF};
use ossec_hsm::{HsmKey, Pkcs11Uri};

#[test]
fn tokens_share_one_directory_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::token(dir.path(), "first", "1234");
    let b = common::token(dir.path(), "second", "5678");
    assert_eq!(a.conf_path(), b.conf_path());
    assert_eq!(
        std::env::var_os(SOFTHSM2_CONF).as_deref(),
        Some(a.conf_path().as_os_str())
    );
    assert_eq!(a.env(), (SOFTHSM2_CONF, a.conf_path()));
    let conf = std::fs::read_to_string(a.conf_path()).unwrap();
    assert!(conf.contains(&format!(
        "directories.tokendir = {}",
        a.dir().join("tokens").display()
    )));

    a.generate_ec_key("k", Curve::P256).unwrap();
    b.generate_ec_key("k", Curve::P384).unwrap();
    let ka = HsmKey::open(&Pkcs11Uri::parse(&a.uri("k")).unwrap(), "1234").unwrap();
    let kb = HsmKey::open(&Pkcs11Uri::parse(&b.uri("k")).unwrap(), "5678").unwrap();
    assert_ne!(ka.public_key_spki_der(), kb.public_key_spki_der());
    assert_eq!(ka.token_label(), "first");
    assert_eq!(kb.token_label(), "second");

    let pin_file = dir.path().join("pin");
    a.write_pin_file(&pin_file).unwrap();
    assert_eq!(ossec_hsm::read_pin_file(&pin_file).unwrap(), "1234");

    let e = TestToken::create(dir.path(), "first", "1234").unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");

    let other = tempfile::tempdir().unwrap();
    let e = TestToken::create(other.path(), "third", "1234").unwrap_err();
    assert!(e.to_string().contains("one directory"), "{e}");
}
