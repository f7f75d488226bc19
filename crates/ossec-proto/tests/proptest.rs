//! Property tests of the sans-IO codec: encode→decode round trips over every
//! cipher, IV variant and agent lookup path; garbage and mutated wires never
//! panic and are either decoded or rejected; TCP framing is independent of
//! how the stream is split; sender counters and replay verdicts follow
//! PROTOCOL.md §3.4/§3.5.
//!
//! Case counts are kept small so the file runs in a few seconds in debug
//! mode; `PROPTEST_CASES=N` sets every test to N cases (the 64 KB payload
//! test to N/64) for a longer soak.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use ossec_proto::codec::{MAX_MESSAGE, MAX_PAYLOAD};
use ossec_proto::frame::{check, encode_frame, FrameCheck, FrameReader};
use ossec_proto::{
    classify, encode, parse_wire, replay_verdict, AesIv, Cipher, ClientKeys, Decoded, Decoder,
    Header, Payload, RejectKind, ReplayVerdict, Sealing, SenderCounter, Wire,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Entries for every lookup path: `any` (ID only), a host, a network, an
/// IPv6 host. The cipher is chosen per message, so any entry can use either.
const KEYS: &str = "\
001 web-01 any a4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1
002 db-02 10.0.0.12 2aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecc
003 !removed any 2801fb64625a4ca5523395d8ab7370dbed275a227688542493c6577c3d9fdf2c
004 edge-04 192.168.10.0/24 cc3fc1626e53a13043b026c48bbf33feff9243a8f506b40928b5b7a767c76fb0
1026 v6-host 2001:db8::7 e58b081006f7e3dfc967a64cb14028d512c9791e558e08baa7196b50ac2f8670
";

/// `default` cases, or `PROPTEST_CASES` when set.
fn cases(default: u32) -> ProptestConfig {
    ProptestConfig::with_cases(env_cases().unwrap_or(default))
}

/// For the 64 KB payload tests: `PROPTEST_CASES / 64`, at least `default`.
fn cases_large(default: u32) -> ProptestConfig {
    ProptestConfig::with_cases(env_cases().map_or(default, |n| (n / 64).max(default)))
}

fn env_cases() -> Option<u32> {
    std::env::var("PROPTEST_CASES").ok()?.parse().ok()
}

static CLIENT_KEYS: LazyLock<ClientKeys> =
    LazyLock::new(|| ClientKeys::parse(KEYS.as_bytes()).expect("test client.keys parses"));

fn keys() -> &'static ClientKeys {
    &CLIENT_KEYS
}

fn idx(id: &str) -> usize {
    keys().index_of_id(id).expect("agent in KEYS")
}

/// How the receiver finds the agent: by `!ID!` (and the source must be
/// allowed) or by the source address alone.
#[derive(Debug, Clone)]
struct Route {
    agent_id: &'static str,
    prefix: bool,
    source: IpAddr,
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        // `any` entry with the prefix, from anywhere.
        any::<[u8; 4]>().prop_map(|a| Route {
            agent_id: "001",
            prefix: true,
            source: IpAddr::V4(Ipv4Addr::from(a)),
        }),
        // Host entry, with and without the prefix (also IPv4-mapped IPv6).
        any::<bool>().prop_map(|prefix| Route {
            agent_id: "002",
            prefix,
            source: "10.0.0.12".parse().unwrap(),
        }),
        Just(Route {
            agent_id: "002",
            prefix: false,
            source: "::ffff:10.0.0.12".parse().unwrap(),
        }),
        // Network entry, any host of the /24, with and without the prefix.
        (any::<bool>(), any::<u8>()).prop_map(|(prefix, h)| Route {
            agent_id: "004",
            prefix,
            source: IpAddr::V4(Ipv4Addr::new(192, 168, 10, h)),
        }),
        // IPv6 host entry with a four-digit ID.
        any::<bool>().prop_map(|prefix| Route {
            agent_id: "1026",
            prefix,
            source: "2001:db8::7".parse().unwrap(),
        }),
    ]
}

fn sealing() -> impl Strategy<Value = Sealing> {
    prop_oneof![
        Just(Sealing::AesFixed),
        any::<[u8; 16]>().prop_map(Sealing::AesRandom),
        Just(Sealing::Blowfish),
    ]
}

/// The wire header fields are `%05hu`, `%010u` and `%04u`: every `u16` and
/// `u32` fits its field, local counters only up to 9999 (see
/// `encode_with_a_five_digit_local_counter_does_not_round_trip` in the report).
fn header() -> impl Strategy<Value = Header> {
    (
        any::<u16>(),
        prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
        prop_oneof![Just(0u32), Just(9997u32), Just(9999u32), 0u32..=9999],
    )
        .prop_map(|(rand, global_counter, local_counter)| Header {
            rand,
            global_counter,
            local_counter,
        })
}

/// Payloads: arbitrary binary, log-like text (compressible), and runs of one
/// byte (which compress to almost nothing).
fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 1..=max),
        2 => proptest::string::string_regex(&format!(
            "[0-9a-z]:[ -~]{{0,40}}:[ -~\n]{{0,{}}}",
            max.saturating_sub(45).max(1)
        ))
        .unwrap()
        .prop_map(String::into_bytes),
        1 => (any::<u8>(), 1..=max).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn encode_for(route: &Route, sealing: Sealing, header: Header, payload: &[u8]) -> Vec<u8> {
    let entry = &keys().entries()[idx(route.agent_id)];
    let prefix = route.prefix.then_some(route.agent_id);
    encode(&entry.agent_key, sealing, prefix, header, payload).expect("payload in range")
}

/// Decodes `wire` and checks it is exactly what was encoded.
fn assert_round_trip(
    d: &mut Decoder,
    route: &Route,
    sealing: Sealing,
    header: Header,
    payload: &[u8],
    wire: &[u8],
) -> Result<(), TestCaseError> {
    match d.decode(keys(), wire, route.source) {
        Ok(Decoded::Message {
            agent,
            id_prefix,
            opened,
        }) => {
            prop_assert_eq!(agent, idx(route.agent_id));
            prop_assert_eq!(id_prefix, route.prefix);
            prop_assert_eq!(opened.header, header);
            prop_assert_eq!(opened.cipher, sealing.cipher());
            prop_assert_eq!(opened.aes_iv, sealing.aes_iv());
            prop_assert!(opened.payload == payload, "payload differs");
        }
        Ok(Decoded::Ping) => prop_assert!(false, "decoded as a ping"),
        Err(e) => prop_assert!(false, "rejected: {}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn encode_decode_round_trips(
        route in route(),
        sealing in sealing(),
        header in header(),
        payload in payload(4096),
    ) {
        let wire = encode_for(&route, sealing, header, &payload);
        // Shape of the wire: prefix, marker, cipher block multiple.
        let sealed = match parse_wire(&wire) {
            Ok(Wire::Sealed { id, sealed }) => {
                prop_assert_eq!(id, route.prefix.then_some(route.agent_id));
                sealed
            }
            other => return Err(TestCaseError::fail(format!("parse_wire: {other:?}"))),
        };
        match sealing {
            Sealing::Blowfish => prop_assert!(sealed[0] == b':' && (sealed.len() - 1) % 8 == 0),
            Sealing::AesFixed => prop_assert!(sealed.starts_with(b"#AES:") && (sealed.len() - 5) % 16 == 0),
            Sealing::AesRandom(iv) => {
                prop_assert!(sealed.starts_with(b"#AES:") && (sealed.len() - 5) % 16 == 0);
                prop_assert_eq!(&sealed[5..21], &iv[..]);
            }
        }
        let mut d = Decoder::new();
        assert_round_trip(&mut d, &route, sealing, header, &payload, &wire)?;
        // The same decoder again (buffers reused), and through a TCP frame.
        let mut stream = Vec::new();
        encode_frame(&wire, &mut stream).unwrap();
        let mut r = FrameReader::new();
        r.feed(&stream);
        let frame = r.next_frame().unwrap().expect("whole frame").to_vec();
        prop_assert_eq!(r.pending(), 0);
        assert_round_trip(&mut d, &route, sealing, header, &payload, &frame)?;
    }

    #[test]
    fn one_decoder_serves_many_messages(
        msgs in proptest::collection::vec((route(), sealing(), header(), payload(512)), 1..8),
    ) {
        let mut d = Decoder::new();
        for (route, sealing, header, payload) in &msgs {
            let wire = encode_for(route, *sealing, *header, payload);
            assert_round_trip(&mut d, route, *sealing, *header, payload, &wire)?;
        }
    }

    /// A message is only ever opened with the key of the agent it was routed to.
    #[test]
    fn wrong_agent_never_decodes(
        sealing in sealing(),
        header in header(),
        payload in payload(256),
    ) {
        let wire = encode(&keys().entries()[idx("001")].agent_key, sealing, Some("002"), header, &payload).unwrap();
        let mut d = Decoder::new();
        let r = d.decode(keys(), &wire, "10.0.0.12".parse().unwrap());
        prop_assert!(r.is_err(), "opened with the wrong key: {:?}", r);
    }
}

proptest! {
    // Large payloads: encoding 64 KB at zlib level 9 is slow in debug mode.
    #![proptest_config(cases_large(10))]

    #[test]
    fn large_payloads_round_trip(
        route in route(),
        sealing in sealing(),
        header in header(),
        len in 16_384usize..=MAX_PAYLOAD,
        seed in any::<u64>(),
        compressible in any::<bool>(),
    ) {
        let payload = if compressible {
            let line = b"1:/var/log/syslog:Nov 29 10:00:01 host app[1]: something happened\n";
            line.iter().copied().cycle().take(len).collect::<Vec<u8>>()
        } else {
            noise(seed, len)
        };
        let wire = encode_for(&route, sealing, header, &payload);
        assert_round_trip(&mut Decoder::new(), &route, sealing, header, &payload, &wire)?;
    }
}

/// Deterministic incompressible bytes (xorshift), cheaper than a proptest
/// `vec` of 65 KB.
fn noise(mut seed: u64, len: usize) -> Vec<u8> {
    seed |= 1;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn largest_incompressible_payload_round_trips_for_every_sealing() {
    let payload = noise(0x5eed, MAX_PAYLOAD);
    let header = Header {
        rand: 65535,
        global_counter: u32::MAX,
        local_counter: 9997,
    };
    let mut d = Decoder::new();
    for sealing in [
        Sealing::AesFixed,
        Sealing::AesRandom([0xa5; 16]),
        Sealing::Blowfish,
    ] {
        for (agent_id, prefix, source) in
            [("1026", true, "2001:db8::7"), ("002", false, "10.0.0.12")]
        {
            let route = Route {
                agent_id,
                prefix,
                source: source.parse().unwrap(),
            };
            let wire = encode_for(&route, sealing, header, &payload);
            assert_round_trip(&mut d, &route, sealing, header, &payload, &wire).unwrap();
        }
    }
    let key = &keys().entries()[0].agent_key;
    let too_big = vec![b'x'; MAX_PAYLOAD + 1];
    let e = encode(key, Sealing::AesFixed, None, header, &too_big).unwrap_err();
    assert_eq!(e.kind, RejectKind::Size);
    let e = encode(key, Sealing::AesFixed, None, header, b"").unwrap_err();
    assert_eq!(e.kind, RejectKind::Size);
}

// ---------------------------------------------------------------------------
// Hostile input: never a panic, always Ok or a Reject.
// ---------------------------------------------------------------------------

/// Random bytes, biased towards the shapes the decoder branches on.
fn hostile_wire() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(Vec::new()),
        Just(b"!001!".to_vec()),
        Just(b"!002!".to_vec()),
        Just(b"!1026!".to_vec()),
        Just(b"!999!".to_vec()),
        Just(b"!0a1!".to_vec()),
        Just(b"!!".to_vec()),
        Just(b"!".to_vec()),
        Just(b"#ping".to_vec()),
        Just(b"#AES".to_vec()),
    ];
    let marker = prop_oneof![
        Just(Vec::new()),
        Just(b"#AES:".to_vec()),
        Just(b":".to_vec()),
        Just(b"!".to_vec()),
    ];
    // Bodies of cipher-block lengths get past the length checks.
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (0usize..20).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 8)),
        (0usize..10).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 16)),
    ];
    (head, marker, body).prop_map(|(h, m, b)| [h, m, b].concat())
}

fn any_source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just("10.0.0.12".parse().unwrap()),
        Just("2001:db8::7".parse().unwrap()),
        any::<u8>().prop_map(|h| IpAddr::V4(Ipv4Addr::new(192, 168, 10, h))),
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

fn check_parse_wire(wire: &[u8]) -> Result<(), TestCaseError> {
    match parse_wire(wire) {
        Ok(Wire::Ping) => prop_assert!(wire.starts_with(b"#ping")),
        Ok(Wire::Sealed { id: None, sealed }) => prop_assert_eq!(sealed, wire),
        Ok(Wire::Sealed {
            id: Some(id),
            sealed,
        }) => {
            prop_assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(wire.len(), id.len() + 2 + sealed.len());
            prop_assert!(wire.ends_with(sealed));
        }
        Err(e) => prop_assert_eq!(e.kind, RejectKind::Format),
    }
    Ok(())
}

fn check_classify(payload: &[u8]) -> Result<(), TestCaseError> {
    match classify(payload) {
        Ok(Payload::Control(c)) => {
            prop_assert!(payload.starts_with(b"#!-"));
            let _ = (c.name(), c.wants_ack());
        }
        Ok(Payload::Event(e)) => {
            prop_assert!(!payload.starts_with(b"#!-"));
            prop_assert_eq!(e.queue, payload[0]);
            prop_assert_eq!(payload[1], b':');
            prop_assert!(payload.ends_with(e.message));
            let _ = e.queue_name();
        }
        Err(e) => prop_assert_eq!(e.kind, RejectKind::Format),
    }
    Ok(())
}

/// Whatever `decode` does with `wire`, it must not panic; if it accepts a
/// message, the message must pass its own checks again.
fn check_decode(d: &mut Decoder, wire: &[u8], source: IpAddr) -> Result<(), TestCaseError> {
    match d.decode(keys(), wire, source) {
        Ok(Decoded::Ping) => prop_assert!(wire.starts_with(b"#ping")),
        Ok(Decoded::Message { agent, opened, .. }) => {
            prop_assert!(agent < keys().len());
            prop_assert!(opened.payload.len() <= MAX_MESSAGE);
            check_classify(opened.payload)?;
        }
        Err(e) => prop_assert!(RejectKind::ALL.contains(&e.kind) && !e.detail.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn random_bytes_never_panic(wire in hostile_wire(), source in any_source()) {
        check_parse_wire(&wire)?;
        check_decode(&mut Decoder::new(), &wire, source)?;
        check_classify(&wire)?;
        let mut r = FrameReader::new();
        r.feed(&wire);
        drain(&mut r)?;
        let _ = check(&wire);
    }

    #[test]
    fn random_payloads_never_panic_classify(
        p in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            proptest::collection::vec(prop_oneof![Just(b'|'), Just(b':'), Just(b'\n'), Just(b'#'), Just(b'!'), any::<u8>()], 0..200)
                .prop_map(|v| [b"#!-".to_vec(), v].concat()),
            proptest::collection::vec(prop_oneof![Just(b'|'), Just(b':'), Just(b' '), any::<u8>()], 0..200)
                .prop_map(|v| [b"1:".to_vec(), v].concat()),
            proptest::string::string_regex("#!-[ -~]{0,60}( \\|[ -~]{0,20}){0,6}( \\[[ -~]{0,30}\\])?( - [ -~]{0,20}( / [0-9a-f]{0,32})?)?\n([#!]?\"[a-z_]{0,8}\":[ -~]{0,10}\n|[0-9a-fx]{0,32} merged.mg\n)*")
                .unwrap().prop_map(String::into_bytes),
        ],
    ) {
        check_classify(&p)?;
    }

    /// Events made with Wazuh's location escaping split back exactly.
    #[test]
    fn escaped_events_split_back(
        queue in any::<u8>().prop_filter("not a control header", |&q| q != b'#'),
        location in proptest::collection::vec(any::<u8>(), 0..60),
        message in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut p = vec![queue, b':'];
        let escaped = location.iter().any(|&b| b == b':' || b == b'|');
        for &b in &location {
            if b == b':' || b == b'|' {
                p.push(b'|');
            }
            p.push(b);
        }
        p.push(b':');
        p.extend_from_slice(&message);
        match classify(&p) {
            Ok(Payload::Event(e)) => {
                prop_assert_eq!(e.queue, queue);
                prop_assert_eq!(&*e.location, &location[..]);
                prop_assert_eq!(e.message, &message[..]);
                prop_assert_eq!(matches!(e.location, std::borrow::Cow::Owned(_)), escaped);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// One change to a valid wire.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Append(Vec<u8>),
    /// Replace the `!ID!` prefix (or its absence) with these bytes.
    Prefix(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..17))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1usize..17).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..17),
            Just(vec![b'!'; 8]),
            (1usize..3).prop_map(|n| vec![b'!'; n * 8]),
        ]
        .prop_map(Mutation::Append),
        1 => prop_oneof![
            Just(Vec::new()),
            Just(b"!001!".to_vec()),
            Just(b"!002!".to_vec()),
            Just(b"!004!".to_vec()),
            Just(b"!1026!".to_vec()),
            Just(b"!003!".to_vec()),
            Just(b"!999!".to_vec()),
            Just(b"!0x1!".to_vec()),
            Just(b"!!".to_vec()),
            Just(b"!".to_vec()),
            Just(b"#ping".to_vec()),
            Just(b"#AES:".to_vec()),
            Just(b":".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..8),
        ]
        .prop_map(Mutation::Prefix),
    ]
}

fn apply(wire: &mut Vec<u8>, prefix_len: &mut usize, m: &Mutation) {
    match m {
        Mutation::Truncate(i) => wire.truncate(i.index(wire.len() + 1)),
        Mutation::FlipBit(i, b) if !wire.is_empty() => {
            let i = i.index(wire.len());
            wire[i] ^= 1 << b;
        }
        Mutation::SetByte(i, v) if !wire.is_empty() => {
            let i = i.index(wire.len());
            wire[i] = *v;
        }
        Mutation::Insert(i, v) => {
            let i = i.index(wire.len() + 1);
            wire.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) if !wire.is_empty() => {
            let i = i.index(wire.len());
            let end = (i + n).min(wire.len());
            wire.drain(i..end);
        }
        Mutation::Append(v) => wire.extend_from_slice(v),
        Mutation::Prefix(p) => {
            let cut = (*prefix_len).min(wire.len());
            wire.splice(..cut, p.iter().copied());
            *prefix_len = p.len();
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Mutated valid wires never panic, and whatever is still accepted is the
    /// original message (the MD5 covers header and payload).
    #[test]
    fn mutated_wires_never_panic(
        route in route(),
        sealing in sealing(),
        header in header(),
        payload in payload(600),
        mutations in proptest::collection::vec(mutation(), 1..4),
        source in prop_oneof![3 => Just(None), 1 => any_source().prop_map(Some)],
    ) {
        let mut wire = encode_for(&route, sealing, header, &payload);
        let mut prefix_len = if route.prefix { route.agent_id.len() + 2 } else { 0 };
        for m in &mutations {
            apply(&mut wire, &mut prefix_len, m);
        }
        let source = source.unwrap_or(route.source);
        check_parse_wire(&wire)?;
        let mut d = Decoder::new();
        check_decode(&mut d, &wire, source)?;
        if let Ok(Decoded::Message { opened, .. }) = d.decode(keys(), &wire, source) {
            prop_assert_eq!(opened.header, header);
            prop_assert!(opened.payload == &payload[..], "a mutated wire decoded to another payload");
        }
        // As a TCP stream too: with a length prefix, and raw.
        let mut r = FrameReader::new();
        let mut stream = Vec::new();
        if encode_frame(&wire, &mut stream).is_ok() {
            r.feed(&stream);
            if let Some(f) = drain(&mut r)?.first() {
                check_decode(&mut d, f, source)?;
            }
        }
        let mut r = FrameReader::new();
        r.feed(&wire);
        drain(&mut r)?;
    }
}

// ---------------------------------------------------------------------------
// TCP framing.
// ---------------------------------------------------------------------------

/// Takes every frame out of `r`; after an error the reader stays broken.
fn drain(r: &mut FrameReader) -> Result<Vec<Vec<u8>>, TestCaseError> {
    let mut frames = Vec::new();
    loop {
        match r.next_frame() {
            Ok(Some(f)) => {
                prop_assert!(!f.is_empty() && f.len() <= MAX_MESSAGE);
                frames.push(f.to_vec());
            }
            Ok(None) => break,
            Err(e) => {
                prop_assert!(matches!(e.kind, RejectKind::Format | RejectKind::Size));
                prop_assert!(r.next_frame().is_err(), "reader recovered after an error");
                break;
            }
        }
    }
    Ok(frames)
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 1..300),
            1 => (1usize..=MAX_MESSAGE).prop_map(|n| vec![0x5a; n]),
            1 => Just(vec![0xa5; MAX_MESSAGE]),
        ],
        0..12,
    )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn frames_split_anywhere_decode_the_same(
        frames in frames(),
        cuts in proptest::collection::vec(any::<Index>(), 0..40),
        tiny_chunks in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            encode_frame(f, &mut stream).unwrap();
        }
        prop_assert_eq!(stream.len(), frames.iter().map(|f| f.len() + 4).sum::<usize>());
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        if tiny_chunks && stream.len() < 4096 {
            points.extend(0..stream.len());
        }
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        points.dedup();
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            r.feed(&stream[w[0]..w[1]]);
            prop_assert!(r.pending() <= stream.len());
            got.extend(drain(&mut r)?);
        }
        prop_assert_eq!(r.pending(), 0);
        prop_assert!(got == frames, "frames differ");
        // `check` agrees on the first frame.
        match frames.first() {
            Some(f) => prop_assert_eq!(check(&stream).unwrap(), FrameCheck::Complete(f.len())),
            None => prop_assert_eq!(check(&stream).unwrap(), FrameCheck::Incomplete),
        }
    }

    /// A bad length (0 or > 65536) after good frames: the good frames come out,
    /// then an error, and the reader stays broken.
    #[test]
    fn bad_length_breaks_the_stream_after_good_frames(
        good in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 0..5),
        bad_len in prop_oneof![Just(0u32), (MAX_MESSAGE as u32 + 1)..=u32::MAX],
        tail in proptest::collection::vec(any::<u8>(), 0..50),
        chunk in 1usize..64,
    ) {
        let mut stream = Vec::new();
        for f in &good {
            encode_frame(f, &mut stream).unwrap();
        }
        stream.extend_from_slice(&bad_len.to_le_bytes());
        stream.extend_from_slice(&tail);
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        let mut failed = None;
        for c in stream.chunks(chunk) {
            r.feed(c);
            loop {
                match r.next_frame() {
                    Ok(Some(f)) => got.push(f.to_vec()),
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e.kind);
                        break;
                    }
                }
            }
            if failed.is_some() {
                break;
            }
        }
        prop_assert!(got == good, "good frames differ");
        let want = if bad_len == 0 { RejectKind::Format } else { RejectKind::Size };
        prop_assert_eq!(failed, Some(want));
        prop_assert!(r.next_frame().is_err());
    }

    #[test]
    fn random_streams_never_panic_the_frame_reader(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (1u32..=70_000).prop_map(|n| n.to_le_bytes().to_vec()),
            ],
            0..30,
        ),
    ) {
        let mut r = FrameReader::new();
        let mut fed = 0;
        for c in &chunks {
            r.feed(c);
            fed += c.len();
            let before = r.pending();
            let frames = drain(&mut r)?;
            let taken: usize = frames.iter().map(|f| f.len() + 4).sum();
            prop_assert!(r.pending() <= fed);
            prop_assert!(frames.is_empty() || r.pending() == before - taken);
        }
    }
}

// ---------------------------------------------------------------------------
// Counters (§3.4, §3.5).
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(1024))]

    /// `local` always lands in 1..=9997 and (global, local) strictly increases.
    /// The global counter is a `u32` that wraps (as in the C code), so the
    /// start stays below `u32::MAX`.
    #[test]
    fn sender_counter_is_bounded_and_increasing(
        global in prop_oneof![any::<u32>(), Just(u32::MAX - 1), Just(0)],
        local in prop_oneof![0u32..=9999, 9990u32..=10_010, any::<u32>()],
        steps in 1usize..300,
    ) {
        let global = global.min(u32::MAX - 1);
        let mut c = SenderCounter::new(global, local);
        let mut prev = (global, local);
        for _ in 0..steps {
            let next = c.advance();
            prop_assert!((1..=9997).contains(&next.1), "local {} out of range", next.1);
            prop_assert!(next > prev, "{:?} not after {:?}", next, prev);
            prop_assert_eq!(next, (c.global, c.local));
            // Consecutive messages are always accepted by the receiver.
            prop_assert_eq!(replay_verdict(Some(prev), next), ReplayVerdict::Accept);
            if next.0 == u32::MAX && next.1 == 9997 {
                break;
            }
            prev = next;
        }
    }

    /// Accept iff strictly greater lexicographically; otherwise Duplicate on
    /// the same global counter and Backwards on a smaller one.
    #[test]
    fn replay_verdict_is_lexicographic(
        stored in prop_oneof![1 => Just(None), 9 => any::<(u32, u32)>().prop_map(Some)],
        dg in prop_oneof![Just(0i64), -2i64..=2, any::<u32>().prop_map(i64::from)],
        dl in prop_oneof![Just(0i64), -2i64..=2, any::<u32>().prop_map(i64::from)],
        absolute in any::<bool>(),
    ) {
        let (sg, sl) = stored.unwrap_or((0, 0));
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        let received = if absolute {
            (clamp(dg), clamp(dl))
        } else {
            (clamp(i64::from(sg) + dg), clamp(i64::from(sl) + dl))
        };
        let v = replay_verdict(stored, received);
        match stored {
            None => prop_assert_eq!(v, ReplayVerdict::Accept),
            Some(s) => {
                prop_assert_eq!(v == ReplayVerdict::Accept, received > s);
                if received <= s {
                    let want = if received.0 == s.0 { ReplayVerdict::Duplicate } else { ReplayVerdict::Backwards };
                    prop_assert_eq!(v, want);
                }
            }
        }
    }
}

#[test]
fn aes_variants_are_reported() {
    // Guards the expectations above: the IV variant is what the sealing says.
    assert_eq!(Sealing::AesFixed.aes_iv(), Some(AesIv::Fixed));
    assert_eq!(
        Sealing::AesRandom([0; 16]).aes_iv(),
        Some(AesIv::RandomPrefix)
    );
    assert_eq!(Sealing::Blowfish.aes_iv(), None);
    assert_eq!(Sealing::Blowfish.cipher(), Cipher::Blowfish);
}

// Enrollment requests and answers, and PROXY headers: hostile bytes never
// panic, and a PROXY header parses the same whatever follows it.
proptest::proptest! {
    #[test]
    fn enrollment_and_proxy_parsers_take_any_bytes(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        prefix in proptest::sample::select(vec![&b""[..], b"OSSEC A:'", b"OSSEC PASS: pw OSSEC A:'ab' V:'", b"PROXY TCP4 ", b"\r\n\r\n\0\r\nQUIT\n\x21\x11"]),
    ) {
        let input = [prefix, &data[..]].concat();
        let _ = ossec_proto::enroll::parse_request(&input, None);
        let _ = ossec_proto::enroll::parse_request(&input, Some(b"pw"));
        let _ = ossec_proto::enroll::parse_answer(&input);
        use ossec_proto::proxy::{parse, Versions};
        if let Ok(Some((h, n))) = parse(&input, Versions::Any) {
            proptest::prop_assert!(n <= input.len());
            // The header alone gives the same answer; any shorter cut needs more.
            proptest::prop_assert_eq!(parse(&input[..n], Versions::Any), Ok(Some((h, n))));
            for cut in 0..n {
                proptest::prop_assert_eq!(parse(&input[..cut], Versions::Any), Ok(None));
            }
        }
    }
}
