//! The whole receive path on hostile bytes.
//!
//! The input is used twice:
//! * as a TCP stream: fed to [`FrameReader`] in chunks (sizes taken from the
//!   input, so the fuzzer varies them), every frame decoded with
//!   [`Decoder::decode`] and every opened payload classified;
//! * as one UDP datagram: decoded and classified the same way.
//!
//! It also checks invariants, not only "no panic":
//! * the frames (and the framing error) do not depend on how the stream was
//!   split;
//! * an opened message (the first of each input) is re-encoded with the same
//!   agent, cipher and header and decodes again to the same payload;
//! * `classify` is also run on the raw input, since payloads that survive the
//!   MD5 check are too rare for the fuzzer to shape them.
//!
//! The `client.keys` is the one of `testdata/vectors`, so the seed corpus
//! (`fuzz/seeds.sh`) holds real, decodable messages.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ossec_proto::codec::MAX_PAYLOAD;
use ossec_proto::frame::FrameReader;
use ossec_proto::{
    classify, encode, parse_wire, AesIv, Cipher, ClientKeys, Decoded, Decoder, Header, Reject,
    RejectKind, Sealing,
};

/// `testdata/vectors/client.keys`: `any` (AES and Blowfish users), a host,
/// a network, a host with a four-digit ID.
const CLIENT_KEYS: &str = "\
001 web-01 any a4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1
002 db-02 10.0.0.12 2aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecc
003 myagent any 2801fb64625a4ca5523395d8ab7370dbed275a227688542493c6577c3d9fdf2c
004 edge-04 192.168.10.0/24 cc3fc1626e53a13043b026c48bbf33feff9243a8f506b40928b5b7a767c76fb0
005 legacy-05 any 08f86bebb2737f6a6f0fb23c6f5da2cec255404e4fb440034d6608697a8d41be
1024 ossec-old 10.0.0.30 d440e50454f31af3176813e02ea68ef786e4d3cea27d26934b484e73cf575dca
1025 ossec-new any d6ba2b0aee0ca923732881584d8c4fa2815d2802827283e0ad84173581569969
1026 ossec-bf any e58b081006f7e3dfc967a64cb14028d512c9791e558e08baa7196b50ac2f8670
";

static KEYS: LazyLock<ClientKeys> =
    LazyLock::new(|| ClientKeys::parse(CLIENT_KEYS.as_bytes()).expect("embedded client.keys"));

/// Sources tried in turn until the agent lookup passes: the two hosts, one
/// address of the network, an address only `any` entries accept, and an
/// IPv4-mapped IPv6 form of a host.
static SOURCES: LazyLock<[IpAddr; 5]> = LazyLock::new(|| {
    [
        "10.0.0.12".parse().unwrap(),
        "10.0.0.30".parse().unwrap(),
        "192.168.10.77".parse().unwrap(),
        "203.0.113.9".parse().unwrap(),
        "::ffff:10.0.0.30".parse().unwrap(),
    ]
});

struct State {
    decoder: Decoder,
    check: Decoder,
    /// Whether this input already had a message re-encoded: zlib level 9
    /// set-up is costly, so only the first opened message of an input is.
    reencoded: bool,
}

thread_local! {
    // One decoder per thread, reused across inputs, as the server does.
    static STATE: std::cell::RefCell<State> = std::cell::RefCell::new(State {
        decoder: Decoder::new(),
        check: Decoder::new(),
        reencoded: false,
    });
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| {
        let s = &mut *s.borrow_mut();
        s.reencoded = false;
        tcp(s, data);
        message(s, data);
        let _ = classify(data);
    });
});

/// Everything a [`FrameReader`] gives for `stream` fed in these chunks.
fn frames(stream: &[u8], chunks: impl Iterator<Item = usize>) -> (Vec<Vec<u8>>, Option<Reject>) {
    let mut r = FrameReader::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks;
    while at < stream.len() {
        let n = sizes
            .next()
            .unwrap_or(stream.len())
            .clamp(1, stream.len() - at);
        r.feed(&stream[at..at + n]);
        at += n;
        loop {
            match r.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= ossec_proto::codec::MAX_MESSAGE);
                    out.push(f.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(r.next_frame().is_err(), "reader recovered after {e}");
                    return (out, Some(e));
                }
            }
        }
        assert!(r.pending() <= at);
    }
    (out, None)
}

fn tcp(s: &mut State, data: &[u8]) {
    // Chunk sizes from the input bytes themselves (1..=64, or a big one).
    let sizes = data.iter().map(|&b| {
        if b & 0x80 != 0 {
            usize::from(b & 0x3f) + 1
        } else {
            usize::from(b) * 97 + 1
        }
    });
    let (chunked, err_chunked) = frames(data, sizes);
    let (whole, err_whole) = frames(data, std::iter::once(data.len()));
    assert_eq!(chunked, whole, "frames depend on how the stream was split");
    assert_eq!(
        err_chunked.map(|e| e.kind),
        err_whole.map(|e| e.kind),
        "framing error depends on how the stream was split"
    );
    for f in &whole {
        message(s, f);
    }
}

/// Decodes one UDP datagram or TCP frame, trying the sources until the agent
/// lookup passes, then classifies and re-encodes what opened.
fn message(s: &mut State, wire: &[u8]) {
    let keys = &*KEYS;
    let _ = parse_wire(wire);
    for &source in SOURCES.iter() {
        match s.decoder.decode(keys, wire, source) {
            Err(e)
                if matches!(
                    e.kind,
                    RejectKind::UnknownAgent | RejectKind::AddressNotAllowed
                ) =>
            {
                continue
            }
            Err(e) => {
                assert!(!e.detail.is_empty());
                return;
            }
            Ok(Decoded::Ping) => return,
            Ok(Decoded::Message {
                agent,
                id_prefix,
                opened,
            }) => {
                let _ = classify(opened.payload);
                let sealing = match (opened.cipher, opened.aes_iv) {
                    (Cipher::Blowfish, _) => Sealing::Blowfish,
                    (Cipher::Aes, Some(AesIv::RandomPrefix)) => Sealing::AesRandom([0x5a; 16]),
                    (Cipher::Aes, _) => Sealing::AesFixed,
                };
                let entry = &keys.entries()[agent];
                let payload = opened.payload.to_vec();
                let header: Header = opened.header;
                // `encode` takes 1..=MAX_PAYLOAD bytes; `decode` accepts
                // whatever fits the 65536-byte inflate buffer.
                if s.reencoded || payload.is_empty() || payload.len() > MAX_PAYLOAD {
                    return;
                }
                s.reencoded = true;
                let again = encode(
                    &entry.agent_key,
                    sealing,
                    id_prefix.then_some(entry.id.as_str()),
                    header,
                    &payload,
                )
                .expect("an opened payload re-encodes");
                match s.check.decode(keys, &again, source) {
                    Ok(Decoded::Message {
                        agent: a2,
                        opened: o2,
                        ..
                    }) => {
                        assert_eq!(a2, agent);
                        assert_eq!(o2.header, header);
                        assert_eq!(o2.cipher, opened.cipher);
                        assert_eq!(o2.payload, &payload[..]);
                    }
                    other => panic!("re-encoded message does not decode: {other:?}"),
                }
                return;
            }
        }
    }
}
