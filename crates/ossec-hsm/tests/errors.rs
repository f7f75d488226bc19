//! Failures say what was being done: wrong PIN (login), unknown token label
//! (lists the labels found), unknown key (names it and lists the keys),
//! missing or non-PKCS#11 module file (names the path), bad `type=`.

mod common;

use ossec_hsm::cryptoki::error::RvError;
use ossec_hsm::softhsm::Curve;
use ossec_hsm::{HsmError, HsmKey, Pkcs11Uri};

fn open(uri: &str, pin: &str) -> HsmError {
    HsmKey::open(&Pkcs11Uri::parse(uri).unwrap(), pin).expect_err("open must fail")
}

#[test]
fn open_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "errs", "1111");
    token.generate_ec_key("k1", Curve::P256).unwrap();
    let module = token.module_path().display().to_string();

    // Wrong PIN (first: login state is shared per process and token).
    let e = open(&token.uri("k1"), "9999");
    let msg = e.to_string();
    assert!(
        matches!(&e, HsmError::Login { source, .. } if source.rv() == Some(RvError::PinIncorrect)),
        "{e:?}"
    );
    assert!(msg.contains("login"), "{msg}");
    assert!(msg.contains("wrong PIN"), "{msg}");
    assert!(msg.contains("CKR_PIN_INCORRECT"), "{msg}");
    assert!(
        !msg.contains("9999") && !format!("{e:?}").contains("9999"),
        "{msg}"
    );

    // Unknown token label: lists the labels found.
    let e = open(
        &format!("pkcs11:token=nope;object=k1?module-path={module}"),
        "1111",
    );
    let msg = e.to_string();
    assert!(matches!(e, HsmError::TokenNotFound { .. }), "{e:?}");
    assert!(msg.contains("\"nope\""), "{msg}");
    assert!(
        msg.contains("\"errs\""),
        "labels found must be listed: {msg}"
    );

    // Unknown object: names it, lists the keys there.
    let e = open(&token.uri("missing"), "1111");
    let msg = e.to_string();
    assert!(matches!(e, HsmError::KeyNotFound { .. }), "{e:?}");
    assert!(msg.contains("\"missing\""), "{msg}");
    assert!(msg.contains("\"k1\""), "{msg}");

    // Module file that does not exist.
    let e = open(
        "pkcs11:token=errs;object=k1?module-path=/nonexistent/libnope-pkcs11.so",
        "1111",
    );
    assert!(matches!(e, HsmError::ModuleNotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/nonexistent/libnope-pkcs11.so"),
        "{e}"
    );

    // A file that is not a shared library.
    let bogus = dir.path().join("not-a-module.so");
    std::fs::write(&bogus, b"not an ELF file").unwrap();
    let e = open(
        &format!("pkcs11:token=errs?module-path={}", bogus.display()),
        "1111",
    );
    assert!(matches!(e, HsmError::LoadModule { .. }), "{e:?}");
    assert!(e.to_string().contains(&bogus.display().to_string()), "{e}");

    // type= other than private.
    let e = open(
        &format!("pkcs11:token=errs;object=k1;type=cert?module-path={module}"),
        "1111",
    );
    assert!(e.to_string().contains("type"), "{e}");

    // slot-id that does not exist.
    let e = open(
        &format!("pkcs11:slot-id=987654321;object=k1?module-path={module}"),
        "1111",
    );
    assert!(matches!(e, HsmError::SlotNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("987654321"), "{e}");

    // Two keys, no selector: ambiguous.
    token.generate_ec_key("k2", Curve::P256).unwrap();
    let e = open(&format!("pkcs11:token=errs?module-path={module}"), "1111");
    assert!(
        matches!(e, HsmError::AmbiguousKey { count: 2, .. }),
        "{e:?}"
    );

    // And the right PIN and name still work, also by id and with no token given.
    let k = HsmKey::open(&Pkcs11Uri::parse(&token.uri("k1")).unwrap(), "1111").unwrap();
    let id = ossec_hsm::percent_encode(k.id(), false);
    let by_id = HsmKey::open(
        &Pkcs11Uri::parse(&format!("pkcs11:id={id}?module-path={module}")).unwrap(),
        "1111",
    )
    .unwrap();
    assert_eq!(by_id.label(), "k1");
    assert_eq!(by_id.public_key_spki_der(), k.public_key_spki_der());
}
