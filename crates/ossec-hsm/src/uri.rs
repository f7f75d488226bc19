//! RFC 7512 PKCS#11 URIs (`pkcs11:token=collector;object=enroll?module-path=/usr/lib/softhsm/libsofthsm2.so`):
//! parsing with percent-decoding into [`Pkcs11Uri`], and re-encoding
//! (without the PIN) for display.
//!
//! Path attributes are separated by `;`, query attributes by `&`. The
//! `module-path` query attribute is required (this crate does not guess a
//! module). Unknown attributes (including vendor `x-` ones) are ignored.

use std::fmt;
use std::path::PathBuf;

use crate::error::HsmError;

/// A parsed PKCS#11 URI naming a private key on a token.
///
/// `Debug` and `Display` never show `pin-value`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `module-path` (query): the PKCS#11 library to load; a file, or a
    /// directory combined with `module-name`.
    pub module_path: PathBuf,
    /// `module-name` (query): library name without prefix/suffix; only used
    /// when `module_path` is a directory.
    pub module_name: Option<String>,
    /// `token`: token label.
    pub token: Option<String>,
    /// `manufacturer`: token manufacturer ID.
    pub manufacturer: Option<String>,
    /// `serial`: token serial number.
    pub serial: Option<String>,
    /// `model`: token model.
    pub model: Option<String>,
    /// `object`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `type`: object class (`private`, `public`, `cert`, ...). Only
    /// `private` (or absent) can be opened as a signing key.
    pub object_type: Option<String>,
    /// `id`: the key's CKA_ID (raw bytes, usually percent-encoded).
    pub id: Option<Vec<u8>>,
    /// `slot-id`: decimal slot ID.
    pub slot_id: Option<u64>,
    /// `slot-description`: slot description.
    pub slot_description: Option<String>,
    /// `pin-value` (query): the user PIN, if given in the URI (discouraged;
    /// the collector reads the PIN from a file instead).
    pub pin_value: Option<String>,
    /// `pin-source` (query): where to read the PIN from (e.g. `file:/path`);
    /// parsed but not acted on by this crate.
    pub pin_source: Option<String>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("module_path", &self.module_path)
            .field("module_name", &self.module_name)
            .field("token", &self.token)
            .field("manufacturer", &self.manufacturer)
            .field("serial", &self.serial)
            .field("model", &self.model)
            .field("object", &self.object)
            .field("object_type", &self.object_type)
            .field("id", &self.id.as_ref().map(|id| hex(id)))
            .field("slot_id", &self.slot_id)
            .field("slot_description", &self.slot_description)
            .field("pin_value", &self.pin_value.as_ref().map(|_| "<redacted>"))
            .field("pin_source", &self.pin_source)
            .finish()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-decodes `value` (the value of attribute `name`).
fn percent_decode(name: &str, value: &str) -> Result<Vec<u8>, HsmError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hexpair = bytes.get(i + 1..i + 3);
            let decoded = hexpair
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match decoded {
                Some(b) => out.push(b),
                None => {
                    let end = (i + 3).min(bytes.len());
                    let shown = if name == "pin-value" {
                        "<redacted>".to_string()
                    } else {
                        String::from_utf8_lossy(&bytes[i..end]).into_owned()
                    };
                    return Err(HsmError::InvalidUri {
                        part: name.to_string(),
                        reason: format!(
                            "bad percent-encoding \"{shown}\" (expected % and two hex digits)"
                        ),
                    });
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_string(name: &str, value: &str) -> Result<String, HsmError> {
    let raw = percent_decode(name, value)?;
    String::from_utf8(raw).map_err(|_| HsmError::InvalidUri {
        part: name.to_string(),
        reason: "value is not UTF-8 after percent-decoding".to_string(),
    })
}

/// Percent-encodes `value` for a PKCS#11 URI. Unreserved characters are kept;
/// in query values (`in_query`) `/` and `:` are kept too, so module paths
/// stay readable.
pub fn percent_encode(value: &[u8], in_query: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (in_query && matches!(b, b'/' | b':'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), HsmError> {
    if slot.is_some() {
        return Err(HsmError::InvalidUri {
            part: name.to_string(),
            reason: "attribute given more than once".to_string(),
        });
    }
    *slot = Some(value);
    Ok(())
}

impl Pkcs11Uri {
    /// Parses an RFC 7512 `pkcs11:` URI. `module-path` is required.
    pub fn parse(uri: &str) -> Result<Self, HsmError> {
        let rest = match uri.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("pkcs11:") => &uri[7..],
            _ => {
                return Err(HsmError::InvalidUri {
                    part: "scheme".to_string(),
                    reason: "must start with \"pkcs11:\"".to_string(),
                })
            }
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };

        let mut module_path: Option<String> = None;
        let mut u = Pkcs11Uri {
            module_path: PathBuf::new(),
            module_name: None,
            token: None,
            manufacturer: None,
            serial: None,
            model: None,
            object: None,
            object_type: None,
            id: None,
            slot_id: None,
            slot_description: None,
            pin_value: None,
            pin_source: None,
        };

        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| HsmError::InvalidUri {
                part: attr.to_string(),
                reason: "path attribute has no '=' (expected name=value)".to_string(),
            })?;
            match name {
                "token" => set_once(&mut u.token, name, decode_string(name, value)?)?,
                "manufacturer" => set_once(&mut u.manufacturer, name, decode_string(name, value)?)?,
                "serial" => set_once(&mut u.serial, name, decode_string(name, value)?)?,
                "model" => set_once(&mut u.model, name, decode_string(name, value)?)?,
                "object" => set_once(&mut u.object, name, decode_string(name, value)?)?,
                "type" => set_once(&mut u.object_type, name, decode_string(name, value)?)?,
                "id" => set_once(&mut u.id, name, percent_decode(name, value)?)?,
                "slot-id" => {
                    let s = decode_string(name, value)?;
                    let n = s.parse::<u64>().map_err(|_| HsmError::InvalidUri {
                        part: name.to_string(),
                        reason: format!("\"{s}\" is not a decimal slot number"),
                    })?;
                    set_once(&mut u.slot_id, name, n)?
                }
                "slot-description" => {
                    set_once(&mut u.slot_description, name, decode_string(name, value)?)?
                }
                // library-*, slot-manufacturer, x-* and anything else: ignored.
                _ => {}
            }
        }

        if let Some(query) = query {
            for attr in query.split('&').filter(|a| !a.is_empty()) {
                let (name, value) = match attr.split_once('=') {
                    Some(nv) => nv,
                    None => {
                        let shown = if attr.starts_with("pin-value") {
                            "pin-value"
                        } else {
                            attr
                        };
                        return Err(HsmError::InvalidUri {
                            part: shown.to_string(),
                            reason: "query attribute has no '=' (expected name=value)".to_string(),
                        });
                    }
                };
                match name {
                    "module-path" => set_once(&mut module_path, name, decode_string(name, value)?)?,
                    "module-name" => {
                        set_once(&mut u.module_name, name, decode_string(name, value)?)?
                    }
                    "pin-value" => set_once(&mut u.pin_value, name, decode_string(name, value)?)?,
                    "pin-source" => set_once(&mut u.pin_source, name, decode_string(name, value)?)?,
                    _ => {}
                }
            }
        }

        match module_path {
            Some(p) if !p.is_empty() => u.module_path = PathBuf::from(p),
            Some(_) => {
                return Err(HsmError::InvalidUri {
                    part: "module-path".to_string(),
                    reason: "empty".to_string(),
                })
            }
            None => return Err(HsmError::MissingModulePath),
        }
        Ok(u)
    }

    /// A short human description of which key this URI selects, e.g.
    /// `label "enroll"` or `label "enroll" and id 01ab`.
    pub fn key_description(&self) -> String {
        match (&self.object, &self.id) {
            (Some(l), Some(id)) => format!("label \"{l}\" and id {}", hex(id)),
            (Some(l), None) => format!("label \"{l}\""),
            (None, Some(id)) => format!("id {}", hex(id)),
            (None, None) => "any label or id".to_string(),
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    /// Re-encodes the URI, leaving out `pin-value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let mut push = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{name}={}", percent_encode(v.as_bytes(), false)));
            }
        };
        push("token", &self.token);
        push("manufacturer", &self.manufacturer);
        push("serial", &self.serial);
        push("model", &self.model);
        push("object", &self.object);
        push("type", &self.object_type);
        push("slot-description", &self.slot_description);
        if let Some(id) = &self.id {
            path.push(format!("id={}", percent_encode(id, false)));
        }
        if let Some(s) = self.slot_id {
            path.push(format!("slot-id={s}"));
        }
        let mut query = vec![format!(
            "module-path={}",
            percent_encode(self.module_path.to_string_lossy().as_bytes(), true)
        )];
        if let Some(n) = &self.module_name {
            query.push(format!(
                "module-name={}",
                percent_encode(n.as_bytes(), true)
            ));
        }
        if let Some(s) = &self.pin_source {
            query.push(format!("pin-source={}", percent_encode(s.as_bytes(), true)));
        }
        write!(f, "pkcs11:{}?{}", path.join(";"), query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_uri() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=collector;object=enroll?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("collector"));
        assert_eq!(u.object.as_deref(), Some("enroll"));
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.id, None);
        assert_eq!(u.slot_id, None);
        assert_eq!(u.pin_value, None);
    }

    #[test]
    fn percent_decoding_and_all_attributes() {
        let u = Pkcs11Uri::parse(
            "PKCS11:token=My%20Token;object=key%3Bone;id=%01%ab%FF;slot-id=42;type=private;\
             serial=abc;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;x-vendor=zzz;\
             library-version=2\
             ?module-path=%2Fopt%2Fhsm%20lib%2Flibx.so&module-name=x&pin-value=12%2634&foo=bar",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("My Token"));
        assert_eq!(u.object.as_deref(), Some("key;one"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xab, 0xff][..]));
        assert_eq!(u.slot_id, Some(42));
        assert_eq!(u.object_type.as_deref(), Some("private"));
        assert_eq!(u.serial.as_deref(), Some("abc"));
        assert_eq!(u.manufacturer.as_deref(), Some("SoftHSM project"));
        assert_eq!(u.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(u.module_path, PathBuf::from("/opt/hsm lib/libx.so"));
        assert_eq!(u.module_name.as_deref(), Some("x"));
        assert_eq!(u.pin_value.as_deref(), Some("12&34"));
    }

    #[test]
    fn pin_never_shown() {
        let u = Pkcs11Uri::parse("pkcs11:token=t?module-path=/m.so&pin-value=s3cr3t").unwrap();
        assert!(!format!("{u:?}").contains("s3cr3t"));
        assert!(!u.to_string().contains("s3cr3t"));
        let e = Pkcs11Uri::parse("pkcs11:token=t?module-path=/m.so&pin-value=s3%zz").unwrap_err();
        assert!(!e.to_string().contains("s3"), "{e}");
    }

    #[test]
    fn display_round_trips() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=a%2Fb;id=%00%01?module-path=/usr/lib/x%20y.so",
        )
        .unwrap();
        let again = Pkcs11Uri::parse(&u.to_string()).unwrap();
        assert_eq!(u, again);
        assert_eq!(
            u.to_string(),
            "pkcs11:token=My%20Token;object=a%2Fb;id=%00%01?module-path=/usr/lib/x%20y.so"
        );
    }

    #[test]
    fn missing_module_path_is_named() {
        let e = Pkcs11Uri::parse("pkcs11:token=collector;object=enroll").unwrap_err();
        assert!(matches!(e, HsmError::MissingModulePath));
        assert!(e.to_string().contains("module-path"), "{e}");
        let e = Pkcs11Uri::parse("pkcs11:token=t?module-path=").unwrap_err();
        assert!(e.to_string().contains("module-path"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = Pkcs11Uri::parse("file:token=x?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("pkcs11:"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:token=a%2?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        assert!(e.to_string().contains("percent"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:object=%zzkey?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("object"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:slot-id=abc?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("slot-id"), "{e}");
        assert!(e.to_string().contains("abc"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:token?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:token=a;token=b?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");

        let e = Pkcs11Uri::parse("pkcs11:token=%ff?module-path=/m.so").unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn empty_path_and_trailing_separators() {
        let u = Pkcs11Uri::parse("pkcs11:?module-path=/m.so&").unwrap();
        assert_eq!(u.token, None);
        let u = Pkcs11Uri::parse("pkcs11:token=t;?module-path=/m.so").unwrap();
        assert_eq!(u.token.as_deref(), Some("t"));
        assert_eq!(u.key_description(), "any label or id");
    }
}
