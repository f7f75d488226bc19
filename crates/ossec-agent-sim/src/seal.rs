//! Sealing the simulator's messages: `ossec_proto::encode_with_level`, the
//! library's own `CreateSecMSG`, so that the load generator sends exactly
//! what the protocol code produces (with a choice of zlib level, to spend
//! less CPU than the server it measures). `SealKey` remembers which cipher
//! the agent uses so that a message cannot be sealed with the other one.

use ossec_proto::codec::encode_with_level;
use ossec_proto::{AgentKey, Header, Reject, RejectKind, Sealing};

/// One agent's key and the cipher it uses.
pub struct SealKey {
    key: AgentKey,
    blowfish: bool,
}

impl SealKey {
    pub fn new(key: &AgentKey, blowfish: bool) -> Self {
        SealKey {
            key: key.clone(),
            blowfish,
        }
    }
}

/// Seals `payload` like `ossec_proto::encode(key, sealing, id_prefix,
/// header, payload)`, byte for byte when `level` is 9 (the level of real
/// agents); other levels give other, equally valid, zlib bytes.
pub fn seal(
    key: &SealKey,
    sealing: Sealing,
    id_prefix: Option<&str>,
    header: Header,
    payload: &[u8],
    level: u32,
) -> Result<Vec<u8>, Reject> {
    if key.blowfish != (sealing == Sealing::Blowfish) {
        return Err(Reject::new(
            RejectKind::Format,
            "the agent's prepared key is for the other cipher",
        ));
    }
    encode_with_level(&key.key, sealing, id_prefix, header, payload, level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossec_proto::{encode, ClientKeys, Decoded, Decoder};

    #[test]
    fn byte_identical_to_ossec_proto_encode() {
        let keys = ClientKeys::parse(
            b"001 agent1 any a5f3c0b4d9e6a7f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4\n",
        )
        .unwrap();
        let key = &keys.entries()[0].agent_key;
        let aes = SealKey::new(key, false);
        let bf = SealKey::new(key, true);
        let payloads: Vec<Vec<u8>> = vec![
            b"1:/var/log/syslog:hello world".to_vec(),
            b"x".to_vec(),
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            vec![b'a'; 65408],
        ];
        let mut d = Decoder::new();
        for (n, p) in payloads.iter().enumerate() {
            for (k, sealing) in [
                (&aes, Sealing::AesFixed),
                (&aes, Sealing::AesRandom([n as u8; 16])),
                (&bf, Sealing::Blowfish),
            ] {
                for prefix in [None, Some("001")] {
                    let header = Header {
                        rand: 12345 + n as u16,
                        global_counter: n as u32,
                        local_counter: 9997,
                    };
                    let ours = seal(k, sealing, prefix, header, p, 9).unwrap();
                    let theirs = encode(key, sealing, prefix, header, p).unwrap();
                    assert_eq!(ours, theirs, "payload {n} {sealing:?} {prefix:?}");
                    // Other levels differ in the zlib bytes but still open.
                    let fast = seal(k, sealing, Some("001"), header, p, 1).unwrap();
                    let Decoded::Message { opened, .. } =
                        d.decode(&keys, &fast, "10.0.0.1".parse().unwrap()).unwrap()
                    else {
                        panic!()
                    };
                    assert_eq!(opened.payload, &p[..]);
                    assert_eq!(opened.header, header);
                }
            }
        }
        assert!(seal(&aes, Sealing::Blowfish, None, Header::default(), b"x", 9).is_err());
        assert!(seal(&aes, Sealing::AesFixed, None, Header::default(), b"", 9).is_err());
    }
}
