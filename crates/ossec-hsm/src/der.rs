//! The few DER encodings this crate needs, written by hand: ECDSA-Sig-Value
//! (from the token's raw `r || s`), SubjectPublicKeyInfo for EC and RSA keys,
//! PKCS#1 RSAPublicKey, and unwrapping the OCTET STRING around CKA_EC_POINT.

/// DER OID TLV of the named curve prime256v1 / secp256r1 (1.2.840.10045.3.1.7).
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID TLV of secp384r1 (1.3.132.0.34).
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER OID TLV of secp521r1 (1.3.132.0.35) (recognized only to name it).
pub(crate) const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// rsaEncryption (1.2.840.113549.1.1.1).
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian unsigned bytes.
pub(crate) fn unsigned_integer(be: &[u8]) -> Vec<u8> {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let trimmed = &be[first..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() || trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

/// `r || s` (equal halves, as CKM_ECDSA returns) -> DER ECDSA-Sig-Value.
pub(crate) fn ecdsa_sig_from_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut seq = unsigned_integer(r);
    seq.extend_from_slice(&unsigned_integer(s));
    Some(tlv(0x30, &seq))
}

/// SubjectPublicKeyInfo for an EC key: `curve_oid` is the DER OID TLV,
/// `point` the uncompressed point `04 || x || y`.
pub(crate) fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(curve_oid);
    spki(&tlv(0x30, &alg), point)
}

/// PKCS#1 RSAPublicKey from CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub(crate) fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut seq = unsigned_integer(modulus);
    seq.extend_from_slice(&unsigned_integer(exponent));
    tlv(0x30, &seq)
}

/// SubjectPublicKeyInfo for an RSA key from its PKCS#1 RSAPublicKey.
pub(crate) fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut alg = OID_RSA_ENCRYPTION.to_vec();
    alg.extend_from_slice(&[0x05, 0x00]);
    spki(&tlv(0x30, &alg), rsa_public_key)
}

fn spki(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(key);
    let mut seq = alg_id.to_vec();
    seq.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &seq)
}

/// Reads one TLV with tag `tag` that spans all of `der`; returns its content.
pub(crate) fn parse_whole_tlv(tag: u8, der: &[u8]) -> Option<&[u8]> {
    let (t, content, rest) = read_tlv(der)?;
    (t == tag && rest.is_empty()).then_some(content)
}

/// Splits the first TLV off `der`: `(tag, content, rest)`.
pub(crate) fn read_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (l as usize, rest)
    } else {
        let n = (l & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// SubjectPublicKeyInfo -> (AlgorithmIdentifier content, public key bytes).
pub(crate) fn parse_spki(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let seq = parse_whole_tlv(0x30, spki)?;
    let (tag, alg, rest) = read_tlv(seq)?;
    if tag != 0x30 {
        return None;
    }
    let bits = parse_whole_tlv(0x03, rest)?;
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then_some((alg, key))
}

/// CKA_EC_POINT -> uncompressed point, accepting both the standard DER
/// OCTET STRING wrapping and the raw point some modules return.
pub(crate) fn ec_point(value: &[u8], coord_len: usize) -> Option<Vec<u8>> {
    let raw_len = 2 * coord_len + 1;
    if value.len() == raw_len && value[0] == 0x04 {
        return Some(value.to_vec());
    }
    let inner = parse_whole_tlv(0x04, value)?;
    (inner.len() == raw_len && inner[0] == 0x04).then(|| inner.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(unsigned_integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), vec![2, 1, 0]);
    }

    #[test]
    fn long_lengths() {
        let v = tlv(0x04, &[0u8; 200]);
        assert_eq!(&v[..3], &[0x04, 0x81, 200]);
        assert_eq!(parse_whole_tlv(0x04, &v).unwrap().len(), 200);
        let v = tlv(0x04, &[0u8; 300]);
        assert_eq!(&v[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(parse_whole_tlv(0x04, &v).unwrap().len(), 300);
    }

    #[test]
    fn ecdsa_sig() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[32] = 0x00;
        raw[33] = 0x01; // s has a leading zero to strip
        let der = ecdsa_sig_from_raw(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 31, 0x01]);
        assert!(ecdsa_sig_from_raw(&[1, 2, 3]).is_none());
    }

    #[test]
    fn ec_points() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7u8; 64]);
        assert_eq!(ec_point(&raw, 32).unwrap(), raw);
        let wrapped = tlv(0x04, &raw);
        assert_eq!(ec_point(&wrapped, 32).unwrap(), raw);
        assert!(ec_point(&wrapped, 48).is_none());
    }

    #[test]
    fn spki_round_trip() {
        let mut raw = vec![0x04];
        raw.extend_from_slice(&[7u8; 64]);
        let spki = ec_spki(OID_P256, &raw);
        let (alg, key) = parse_spki(&spki).unwrap();
        assert_eq!(key, &raw[..]);
        assert!(alg.ends_with(OID_P256));
        let rsa = rsa_public_key(&[0xc0; 256], &[1, 0, 1]);
        let spki = rsa_spki(&rsa);
        let (_, key) = parse_spki(&spki).unwrap();
        assert_eq!(key, &rsa[..]);
    }
}
