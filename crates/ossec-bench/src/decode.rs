//! `ossec-bench decode`: the Rust decoder (`ossec_proto::Decoder::decode`,
//! what `serve` runs per message: the `!ID!` lookup, decryption, bounded
//! inflate, MD5 check, counter parse) against the C reference in
//! `bench/reference/readsecmsg.c` (what Wazuh's `ReadSecMSG` does, with
//! OpenSSL 3 and zlib), over the very same pre-made messages, on the same
//! CPU (the process is pinned before either runs), one after the other.
//! Rates are messages per second of CPU time of the decoding thread (Rust)
//! and process (C), so that time the machine gives to others is not
//! counted against either.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use ossec_agent_sim::events::{self, EventCtx, EventKind};
use ossec_proto::{ClientKeys, Decoded, Decoder, Header, Sealing};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::report::{self, round};

#[derive(clap::Args)]
pub struct Args {
    /// CPU seconds each decoder gets per case.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Distinct messages per case (decoded in passes).
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// The CPU both decoders run on (default: the last one).
    #[arg(long)]
    cpu: Option<usize>,
    /// The C compiler for the reference.
    #[arg(long, default_value = "cc")]
    cc: String,
    /// The reference's source.
    #[arg(long)]
    reference_src: Option<PathBuf>,
    /// Where the messages and the built reference go (default: a temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A few hundred milliseconds per case: checks that both decoders run
    /// and agree, measures nothing worth reading (CI).
    #[arg(long)]
    smoke: bool,
}

/// One case: a cipher and an event size.
struct Case {
    name: &'static str,
    sealing: Sealing,
    size: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "aes_170",
        sealing: Sealing::AesFixed,
        size: 170,
    },
    Case {
        name: "aes_2k",
        sealing: Sealing::AesFixed,
        size: 2048,
    },
    Case {
        name: "blowfish_170",
        sealing: Sealing::Blowfish,
        size: 170,
    },
    Case {
        name: "blowfish_2k",
        sealing: Sealing::Blowfish,
        size: 2048,
    },
];

const AGENT_ID: &str = "001";
const KEYS: &str =
    "001 bench-agent any 6d3f1b7c2a9e4f80b5c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccdd\n";

/// Event payloads of exactly `size` bytes, as agents send them: syslog
/// lines for the small size, Windows eventchannel JSON for the large one
/// (filled up with further events of the same kind, cut at `size`).
fn payloads(size: usize, n: usize, rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let kind = if size <= 512 {
        EventKind::Syslog
    } else {
        EventKind::EventChannel
    };
    let ctx = EventCtx {
        name: "bench-agent",
        key_ip: "any",
        flavor: ossec_agent_sim::agent::Flavor::Wazuh,
        now_us: 1_764_800_000_000_000,
        stamp: false,
    };
    let mut one = String::new();
    (0..n)
        .map(|_| {
            let mut p: Vec<u8> = Vec::with_capacity(size + 4096);
            while p.len() < size {
                events::build(kind, &ctx, rng, &mut one);
                if !p.is_empty() {
                    p.push(b'\n');
                }
                p.extend_from_slice(one.as_bytes());
            }
            p.truncate(size);
            p
        })
        .collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (seconds, messages) = if a.smoke {
        (0.2, a.messages.min(200))
    } else {
        (a.seconds, a.messages)
    };
    if messages == 0 {
        bail!("--messages must be at least 1");
    }
    // The last CPU this process may run on (a cpuset may not start at 0).
    let cpu = match a.cpu {
        Some(c) => c,
        None => allowed_cpus()?
            .last()
            .copied()
            .context("this process may run on no CPU")?,
    };
    pin(cpu)?;
    let tmp;
    let dir = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("ossec-bench-decode-")
                .tempdir()
                .context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let src = a.reference_src.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/reference/readsecmsg.c")
    });
    let reference = dir.join("readsecmsg");
    let out = Command::new(&a.cc)
        .args(["-O2", "-o"])
        .arg(&reference)
        .arg(&src)
        .args(["-lcrypto", "-lz"])
        .output()
        .with_context(|| format!("running {} to build {}", a.cc, src.display()))?;
    if !out.status.success() {
        bail!(
            "building the C reference {} failed (libssl-dev and zlib1g-dev installed?):\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys = ClientKeys::parse(KEYS.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let entry = &keys.entries()[0];
    let material = std::str::from_utf8(entry.agent_key.material())?.to_owned();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let mut cases = serde_json::Map::new();
    let mut rows = Vec::new();
    let mut top = None;
    for case in &CASES {
        let plain = payloads(case.size, messages, &mut rng);
        let wires: Vec<Vec<u8>> = plain
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let header = Header {
                    rand: rng.gen(),
                    global_counter: 1 + (i / 9997) as u32,
                    local_counter: 1 + (i % 9997) as u32,
                };
                ossec_proto::encode(&entry.agent_key, case.sealing, Some(AGENT_ID), header, p)
                    .map_err(|e| anyhow::anyhow!("sealing a {} message: {e}", case.name))
            })
            .collect::<anyhow::Result<_>>()?;
        let file = dir.join(format!("{}.msgs", case.name));
        write_messages(&file, &material, &wires)?;
        let (rust_n, rust_cpu) = rust_decode(&keys, &wires, &plain, seconds)?;
        let c = c_decode(&reference, &file, seconds)?;
        let rust_rate = rust_n as f64 / rust_cpu;
        let c_rate = c.0 as f64 / c.1;
        let ratio = rust_rate / c_rate;
        let avg_wire = wires.iter().map(Vec::len).sum::<usize>() as f64 / wires.len() as f64;
        rows.push((
            case.name.to_string(),
            format!(
                "Rust {:>9.0} msgs/s ({:.2} µs)   C {:>9.0} msgs/s ({:.2} µs)   ratio {:.2}   ({:.0} B on the wire)",
                rust_rate,
                1e6 / rust_rate,
                c_rate,
                1e6 / c_rate,
                ratio,
                avg_wire
            ),
        ));
        let v = json!({
            "rust_msgs_per_s": round(rust_rate, 0),
            "c_reference_msgs_per_s": round(c_rate, 0),
            "decode_ratio": round(ratio, 3),
            "rust_us_per_msg": round(1e6 / rust_rate, 3),
            "c_reference_us_per_msg": round(1e6 / c_rate, 3),
            "event_bytes": case.size,
            "wire_bytes_avg": round(avg_wire, 1),
            "rust_messages": rust_n,
            "c_reference_messages": c.0,
        });
        if case.name == "aes_170" {
            top = Some((rust_rate, c_rate, ratio));
        }
        cases.insert(case.name.into(), v);
    }
    let Some((r, c, ratio)) = top else {
        bail!("the aes_170 case did not run");
    };
    let json = json!({
        "rust_msgs_per_s": round(r, 0),
        "c_reference_msgs_per_s": round(c, 0),
        "decode_ratio": round(ratio, 3),
        "cases": Value::Object(cases),
        "cpu": cpu,
        "seconds_per_case": seconds,
        "distinct_messages": messages,
        "smoke": a.smoke,
        "loadavg": crate::procs::loadavg(),
    });
    report::print(
        &format!("decode: {messages} distinct messages per case, {seconds} CPU s each, CPU {cpu}"),
        &rows,
        &json,
    );
    Ok(())
}

/// Pins this thread (and so the children it starts) to `cpu`.
/// The CPUs this process may run on, ascending.
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size, CPU_ISSET reads below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            bail!(
                "reading the CPU affinity: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

fn pin(cpu: usize) -> anyhow::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("--cpu {cpu}: CPUs are numbered below {}", libc::CPU_SETSIZE);
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET (below
    // CPU_SETSIZE, checked above) and sched_setaffinity only read and
    // write that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The format `readsecmsg` reads: `ID KEY47\n`, then length-prefixed records.
fn write_messages(file: &Path, material: &str, wires: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
    );
    writeln!(f, "{AGENT_ID} {material}")?;
    for w in wires {
        f.write_all(&(w.len() as u32).to_le_bytes())?;
        f.write_all(w)?;
    }
    f.flush()?;
    Ok(())
}

/// Decodes `wires` in passes for `seconds` of this thread's CPU time; the
/// first pass also checks every payload. Returns (messages, CPU seconds).
fn rust_decode(
    keys: &ClientKeys,
    wires: &[Vec<u8>],
    plain: &[Vec<u8>],
    seconds: f64,
) -> anyhow::Result<(u64, f64)> {
    let mut dec = Decoder::new();
    let source = std::net::IpAddr::from([127, 0, 0, 1]);
    for (i, (w, p)) in wires.iter().zip(plain).enumerate() {
        match dec.decode(keys, w, source) {
            Ok(Decoded::Message { opened, .. }) if opened.payload == &p[..] => {}
            Ok(_) => bail!("message {i}: decoded to another payload"),
            Err(e) => bail!("message {i}: {e:?}"),
        }
    }
    let (mut n, mut sink) = (0u64, 0u64);
    let start = thread_cpu_s();
    let mut now = start;
    while now - start < seconds {
        for w in wires {
            if let Ok(Decoded::Message { opened, .. }) =
                dec.decode(keys, std::hint::black_box(w), source)
            {
                sink = sink.wrapping_add(u64::from(opened.header.local_counter));
            } else {
                bail!("a message that decoded before failed");
            }
        }
        n += wires.len() as u64;
        now = thread_cpu_s();
    }
    std::hint::black_box(sink);
    Ok((n, now - start))
}

/// Runs the reference over `file`; returns (messages, CPU seconds).
fn c_decode(reference: &Path, file: &Path, seconds: f64) -> anyhow::Result<(u64, f64)> {
    let out = Command::new(reference)
        .arg(file)
        .arg(seconds.to_string())
        .arg(u64::MAX.to_string())
        .output()
        .with_context(|| format!("running {}", reference.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "the C reference printed `{}` (stderr: {})",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() || v["failed"].as_u64() != Some(0) {
        bail!("the C reference failed on {}: {v}", file.display());
    }
    match (v["messages"].as_u64(), v["cpu_s"].as_f64()) {
        (Some(n), Some(s)) if n > 0 && s > 0.0 => Ok((n, s)),
        _ => bail!("the C reference printed {v}"),
    }
}
