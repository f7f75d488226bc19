//! The private key generated on the token is sensitive and not extractable:
//! C_GetAttributeValue(CKA_VALUE) is refused, and no private key file is
//! written anywhere in the test directory.

mod common;

use ossec_hsm::cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use ossec_hsm::softhsm::Curve;
use ossec_hsm::{self_signed_certificate, HsmKey, Pkcs11Uri};

#[test]
fn private_key_stays_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::token(dir.path(), "vault", "2468");
    token.generate_ec_key("secret", Curve::P256).unwrap();
    let key = HsmKey::open(&Pkcs11Uri::parse(&token.uri("secret")).unwrap(), "2468").unwrap();
    let cert = self_signed_certificate(&key, vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.der"), cert.as_ref()).unwrap();

    let session = token.open_user_session().unwrap();
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"secret".to_vec()),
        ])
        .unwrap();
    assert_eq!(handles.len(), 1);
    let h = handles[0];

    let info = session
        .get_attribute_info(h, &[AttributeType::Value])
        .unwrap();
    assert!(
        matches!(info[0], AttributeInfo::Sensitive),
        "CKA_VALUE must be sensitive, got {:?}",
        info[0]
    );
    let got = session.get_attributes(h, &[AttributeType::Value]).unwrap();
    assert!(
        !got.iter().any(|a| matches!(a, Attribute::Value(_))),
        "CKA_VALUE must not be readable"
    );

    let flags = session
        .get_attributes(
            h,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    for a in &flags {
        match a {
            Attribute::Sensitive(v) => assert!(*v, "CKA_SENSITIVE"),
            Attribute::Extractable(v) => assert!(!*v, "CKA_EXTRACTABLE"),
            Attribute::AlwaysSensitive(v) => assert!(*v, "CKA_ALWAYS_SENSITIVE"),
            Attribute::NeverExtractable(v) => assert!(*v, "CKA_NEVER_EXTRACTABLE"),
            Attribute::Token(v) => assert!(*v, "CKA_TOKEN"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(flags.len(), 5);

    // Nothing in the directory looks like an exported private key.
    let files = common::files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("softhsm2.conf")));
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_lowercase();
        assert!(
            !name.ends_with(".pem") && !name.ends_with(".key"),
            "unexpected key-like file {}",
            f.display()
        );
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "PEM private key found in {}",
            f.display()
        );
    }
}
