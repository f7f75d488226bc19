//! The spool's segment log on disk: append-only files of CRC32C-checked
//! records, group-committed with fdatasync, recovered after a crash.
//!
//! Owns the on-disk format and its invariants; knows nothing of events (the
//! payload is opaque) except that every record carries a tag (agent ID and
//! its receive counters) whose maximum per agent is recovered at open.
//!
//! Files in the directory: `spool.lock` (flock: one process per spool),
//! `spool.id` (random hex identity, the key of the committed position in
//! the store), `{n:020}.seg` (segments, in order), `{n:020}.ctr` (the
//! per-agent maximum counters and the first record's time of a sealed
//! segment, so that opening does not rescan sealed segments) and
//! `{n:020}.spare` (at most [`MAX_SPARES`] committed segments kept for
//! reuse: writing over pages the page cache already holds costs a fraction
//! of writing a new file, whose pages the kernel must allocate first).
//!
//! Segment: [`HEADER`] (16 bytes), then records. Record: `len u32 LE`
//! (bytes after the CRC) · `crc32c u32 LE` (of those bytes, the CRC started
//! from [`seed`] of the segment's number) · `ts_us i64` · `global u32` ·
//! `local u32` · `agent_len u8` · agent · `kind u8` · payload. The seed is
//! what makes reuse safe: a reused file still holds the records of its
//! earlier life after the new ones, and those never check under the new
//! number, so a crash cannot bring them back. Segments without the header
//! (written before reuse existed) are read as they were: records from
//! offset 0, CRC from 0.
//!
//! Concurrency: one [`Spool`] (appends, syncs, releases) and any number of
//! [`Reader`]s, which open their own file handles and never read past the
//! durable end they are given. Unsynced records live in memory only (the
//! file holds exactly what was synced), so a failed write or sync loses
//! nothing: the file is cut back to its last synced length and the records
//! are written again at the next sync.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Largest record (header included).
pub const MAX_RECORD: usize = 1 << 20;
/// Bytes before the agent ID: len, crc, ts, global, local, agent_len.
const HEAD: usize = 4 + 4 + 8 + 4 + 4 + 1;
/// Most of a segment file read into memory at once (for the scan at open
/// and a resync after a corrupt record). Segments this spool writes are at
/// most 64 MiB; bytes beyond this in a foreign or damaged file are treated
/// as a torn tail.
const MAX_SCAN: u64 = 128 << 20;
/// Most unsynced bytes held in memory before appends are refused.
const MAX_PENDING: usize = 256 << 20;
/// The start of every segment this spool writes. Read as a record length
/// its first four bytes are far above [`MAX_RECORD`], so an old segment
/// (records from offset 0) is never mistaken for one with a header.
pub const HEADER: &[u8; 16] = b"OSSECSPL\x02\0\0\0\0\0\0\0";
/// Committed segments kept for reuse (`.spare`), not counted in
/// `max_bytes`.
pub const MAX_SPARES: usize = 2;

/// The CRC seed of segment `n`'s records (0 for old segments without the
/// header). Distinct for distinct numbers below 2^32: a CRC is injective
/// on inputs of one length that differ in at most 32 bits.
pub fn seed(n: u64) -> u32 {
    crc32c::crc32c(&n.to_le_bytes())
}

/// How a segment file's records are laid out: where the first starts and
/// the seed of their CRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    start: u64,
    seed: u32,
}

impl Layout {
    /// From the file's first bytes.
    fn of(n: u64, first: &[u8]) -> Layout {
        if first.starts_with(HEADER) {
            Layout {
                start: HEADER.len() as u64,
                seed: seed(n),
            }
        } else {
            Layout { start: 0, seed: 0 }
        }
    }

    fn read(n: u64, f: &File) -> io::Result<Layout> {
        let mut b = [0u8; 16];
        let mut got = 0;
        while got < b.len() {
            match f.read_at(&mut b[got..], got as u64)? {
                0 => break,
                k => got += k,
            }
        }
        Ok(Layout::of(n, &b[..got]))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

impl Config {
    pub fn new(dir: PathBuf) -> Self {
        Config {
            dir,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// A place in the log: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The agent and counters a record carries.
pub struct Tag<'a> {
    pub agent: &'a str,
    pub counters: (u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the spool is full (--spool-max-bytes)")]
    Full,
    #[error("record too large ({0} bytes)")]
    TooLarge(usize),
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}: another process uses this spool directory (one collector per spool)")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub truncated_bytes: u64,
    pub corrupt_records: u64,
    pub segments: usize,
    pub bytes: u64,
    pub start: Position,
    pub end: Position,
    pub counters: HashMap<String, (u32, u32)>,
    pub oldest_ts_us: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct SegInfo {
    len: u64,
    first_ts: Option<i64>,
}

pub struct Spool {
    dir: PathBuf,
    _lock: File,
    id: String,
    cfg: Config,
    sealed: BTreeMap<u64, SegInfo>,
    active_no: u64,
    active: File,
    /// Synced length of the active segment.
    durable_len: u64,
    active_first_ts: Option<i64>,
    active_counters: HashMap<String, (u32, u32)>,
    /// Records appended since the last successful sync.
    pending: Vec<u8>,
    /// How far the store has committed ([`Spool::release`]): bytes before
    /// it no longer count against `max_bytes`.
    committed: Position,
    /// Numbers of the `.spare` files, at most [`MAX_SPARES`].
    spares: Vec<u64>,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}
fn ctr_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.ctr"))
}
fn spare_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.spare"))
}

/// Starts segment `n` in a spare file if there is one (its old records
/// stay behind the header, under another seed) or in a new file, and writes
/// the header (synced with the segment's first records).
fn start_segment(dir: &Path, spares: &mut Vec<u64>, n: u64) -> io::Result<File> {
    let path = seg_path(dir, n);
    // A spare that cannot be renamed (removed by hand?) is forgotten.
    let reused = spares
        .pop()
        .is_some_and(|s| std::fs::rename(spare_path(dir, s), &path).is_ok());
    let file = OpenOptions::new()
        .create(true)
        .truncate(!reused)
        .read(true)
        .write(true)
        .open(&path)?;
    file.write_all_at(HEADER, 0)?;
    Ok(file)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Agent ID → the highest (global, local) counters seen.
pub type Counters = HashMap<String, (u32, u32)>;

fn raise(map: &mut HashMap<String, (u32, u32)>, agent: &str, c: (u32, u32)) {
    match map.get_mut(agent) {
        Some(m) if *m >= c => {}
        Some(m) => *m = c,
        None => {
            map.insert(agent.to_owned(), c);
        }
    }
}

/// A record parsed from bytes.
struct Parsed<'a> {
    size: usize,
    ts: i64,
    counters: (u32, u32),
    agent: &'a str,
    kind: u8,
    payload: &'a [u8],
}

/// Parses the record at the start of `b` (`None`: incomplete, corrupt, or
/// written under another seed).
fn parse(b: &[u8], seed: u32) -> Option<Parsed<'_>> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    if !(HEAD - 8 + 1..=MAX_RECORD).contains(&len) || b.len() < 8 + len {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let body = &b[8..8 + len];
    if crc32c::crc32c_append(seed, body) != crc {
        return None;
    }
    let ts = i64::from_le_bytes(body[0..8].try_into().ok()?);
    let g = u32::from_le_bytes(body[8..12].try_into().ok()?);
    let l = u32::from_le_bytes(body[12..16].try_into().ok()?);
    let alen = body[16] as usize;
    let rest = body.get(17..)?;
    let agent = std::str::from_utf8(rest.get(..alen)?).ok()?;
    let kind = *rest.get(alen)?;
    let payload = rest.get(alen + 1..)?;
    Some(Parsed {
        size: 8 + len,
        ts,
        counters: (g, l),
        agent,
        kind,
        payload,
    })
}

/// Scans a whole segment (`n`): counters, first time, the valid length
/// (the end of the last valid record) and corrupt records skipped before it.
fn scan(n: u64, bytes: &[u8]) -> (Counters, Option<i64>, u64, u64) {
    let layout = Layout::of(n, bytes);
    let mut counters = HashMap::new();
    let mut first = None;
    let mut off = layout.start as usize;
    let mut valid_end = off;
    let mut corrupt = 0;
    while off < bytes.len() {
        match parse(&bytes[off..], layout.seed) {
            Some(p) => {
                raise(&mut counters, p.agent, p.counters);
                first.get_or_insert(p.ts);
                off += p.size;
                valid_end = off;
            }
            None => match resync(bytes, off + 1, layout.seed) {
                Some(next) => {
                    corrupt += 1;
                    off = next;
                }
                None => break,
            },
        }
    }
    (counters, first, valid_end as u64, corrupt)
}

/// The first offset at or after `from` where a valid record starts.
fn resync(bytes: &[u8], from: usize, seed: u32) -> Option<usize> {
    (from..bytes.len().saturating_sub(8)).find(|&o| parse(&bytes[o..], seed).is_some())
}

fn write_sidecar(
    dir: &Path,
    n: u64,
    first_ts: Option<i64>,
    counters: &HashMap<String, (u32, u32)>,
) -> io::Result<()> {
    let mut b = Vec::with_capacity(16 + counters.len() * 24);
    b.extend_from_slice(&first_ts.unwrap_or(i64::MIN).to_le_bytes());
    b.extend_from_slice(&(counters.len() as u32).to_le_bytes());
    for (a, (g, l)) in counters {
        let a = &a.as_bytes()[..a.len().min(255)];
        b.push(a.len() as u8);
        b.extend_from_slice(a);
        b.extend_from_slice(&g.to_le_bytes());
        b.extend_from_slice(&l.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{n:020}.ctr.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    std::fs::rename(tmp, ctr_path(dir, n))
}

fn read_sidecar(dir: &Path, n: u64) -> Option<(Option<i64>, Counters)> {
    let b = std::fs::read(ctr_path(dir, n)).ok()?;
    if b.len() < 16 {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let ts = i64::from_le_bytes(body[0..8].try_into().ok()?);
    let count = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let mut map = HashMap::with_capacity(count.min(1 << 20));
    let mut rest = &body[12..];
    for _ in 0..count {
        let alen = *rest.first()? as usize;
        let a = std::str::from_utf8(rest.get(1..1 + alen)?).ok()?;
        let g = u32::from_le_bytes(rest.get(1 + alen..5 + alen)?.try_into().ok()?);
        let l = u32::from_le_bytes(rest.get(5 + alen..9 + alen)?.try_into().ok()?);
        map.insert(a.to_owned(), (g, l));
        rest = &rest[9 + alen..];
    }
    Some(((ts != i64::MIN).then_some(ts), map))
}

fn lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("spool.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_at(&path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(OpenError::Locked(dir.to_owned()));
    }
    Ok(f)
}

fn read_or_make_id(dir: &Path) -> Result<String, OpenError> {
    let path = dir.join("spool.id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s.to_owned());
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    let tmp = dir.join("spool.id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(io_at(&tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    Ok(id)
}

fn segment_numbers(dir: &Path) -> Result<Vec<u64>, OpenError> {
    numbered(dir, ".seg")
}

/// The numbers of the files `{n}{suffix}` in `dir`, in order.
fn numbered(dir: &Path, suffix: &str) -> Result<Vec<u64>, OpenError> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(suffix)?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    Ok(v)
}

impl Spool {
    /// Opens the spool in `cfg.dir` (created if missing), recovering what a
    /// crash left: the last segment is scanned, cut after its last valid
    /// record and sealed; appends go to a new segment.
    pub fn open(mut cfg: Config) -> Result<(Spool, Recovery), OpenError> {
        // A small spool rotates often, so that committed data is deleted
        // long before the limit.
        cfg.segment_bytes = cfg.segment_bytes.min((cfg.max_bytes / 8).max(4 << 10));
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let lock = lock(&dir)?;
        let id = read_or_make_id(&dir)?;
        let nums = segment_numbers(&dir)?;
        let mut rec = Recovery::default();
        let mut sealed = BTreeMap::new();
        for (i, &n) in nums.iter().enumerate() {
            let path = seg_path(&dir, n);
            let last = i + 1 == nums.len();
            let side = if last { None } else { read_sidecar(&dir, n) };
            let (counters, first_ts, len) = match side {
                Some((ts, c)) => {
                    let len = std::fs::metadata(&path).map_err(io_at(&path))?.len();
                    (c, ts, len)
                }
                None => {
                    let bytes = {
                        use std::io::Read;
                        let mut v = Vec::new();
                        File::open(&path)
                            .and_then(|f| f.take(MAX_SCAN).read_to_end(&mut v))
                            .map_err(io_at(&path))?;
                        v
                    };
                    let (c, ts, valid, corrupt) = scan(n, &bytes);
                    rec.corrupt_records += corrupt;
                    let len = std::fs::metadata(&path).map_err(io_at(&path))?.len();
                    if valid < len {
                        // A torn tail (or garbage after the last record).
                        OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| {
                                f.set_len(valid)?;
                                f.sync_all()
                            })
                            .map_err(io_at(&path))?;
                        rec.truncated_bytes += len - valid;
                    }
                    write_sidecar(&dir, n, ts, &c).map_err(io_at(&path))?;
                    (c, ts, valid)
                }
            };
            for (a, c) in &counters {
                raise(&mut rec.counters, a, *c);
            }
            sealed.insert(n, SegInfo { len, first_ts });
        }
        let mut spares = numbered(&dir, ".spare")?;
        for extra in spares.drain(..spares.len().saturating_sub(MAX_SPARES)) {
            let _ = std::fs::remove_file(spare_path(&dir, extra));
        }
        let active_no = nums.last().map_or(1, |n| n + 1);
        let path = seg_path(&dir, active_no);
        let active = start_segment(&dir, &mut spares, active_no).map_err(io_at(&path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        rec.segments = sealed.len() + 1;
        rec.bytes = sealed.values().map(|s| s.len).sum();
        rec.start = Position {
            segment: sealed.keys().next().copied().unwrap_or(active_no),
            offset: 0,
        };
        rec.end = Position {
            segment: active_no,
            offset: HEADER.len() as u64,
        };
        rec.oldest_ts_us = sealed.values().find_map(|s| s.first_ts);
        Ok((
            Spool {
                dir,
                _lock: lock,
                id,
                cfg,
                sealed,
                active_no,
                active,
                durable_len: HEADER.len() as u64,
                active_first_ts: None,
                active_counters: HashMap::new(),
                pending: Vec::with_capacity(1 << 20),
                committed: Position::default(),
                spares,
            },
            rec,
        ))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes of all segments, unsynced records included.
    pub fn bytes(&self) -> u64 {
        self.sealed.values().map(|s| s.len).sum::<u64>()
            + self.durable_len
            + self.pending.len() as u64
    }

    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }

    /// The time of the oldest record still in the spool.
    pub fn oldest_ts_us(&self) -> Option<i64> {
        self.sealed
            .values()
            .find_map(|s| s.first_ts)
            .or(self.active_first_ts)
    }

    /// Appends a record (in memory until [`Spool::sync`]).
    pub fn append(
        &mut self,
        ts_us: i64,
        tag: Tag<'_>,
        kind: u8,
        payload: &[u8],
    ) -> Result<Position, AppendError> {
        let agent = &tag.agent.as_bytes()[..tag.agent.len().min(255)];
        let size = HEAD + agent.len() + 1 + payload.len();
        if size > MAX_RECORD {
            return Err(AppendError::TooLarge(size));
        }
        if self.bytes() + size as u64 > self.cfg.max_bytes
            || self.pending.len() + size > MAX_PENDING
        {
            return Err(AppendError::Full);
        }
        if self.durable_len + (self.pending.len() + size) as u64 > self.cfg.segment_bytes
            && self.has_records()
        {
            self.rotate()?;
        }
        let start = self.pending.len();
        let p = &mut self.pending;
        p.extend_from_slice(&((size - 8) as u32).to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&ts_us.to_le_bytes());
        p.extend_from_slice(&tag.counters.0.to_le_bytes());
        p.extend_from_slice(&tag.counters.1.to_le_bytes());
        p.push(agent.len() as u8);
        p.extend_from_slice(agent);
        p.push(kind);
        p.extend_from_slice(payload);
        let crc = crc32c::crc32c_append(seed(self.active_no), &p[start + 8..]);
        p[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.active_first_ts.get_or_insert(ts_us);
        match self.active_counters.get_mut(tag.agent) {
            Some(m) if *m >= tag.counters => {}
            Some(m) => *m = tag.counters,
            None => {
                self.active_counters
                    .insert(tag.agent.to_owned(), tag.counters);
            }
        }
        Ok(Position {
            segment: self.active_no,
            offset: self.durable_len + self.pending.len() as u64,
        })
    }

    /// Writes the records appended since the last sync and fdatasyncs.
    /// Returns the durable end. On failure nothing appended is lost: the
    /// file is cut back to its synced length and the next sync writes the
    /// records again.
    pub fn sync(&mut self) -> Result<Position, AppendError> {
        if !self.pending.is_empty() {
            let r = self
                .active
                .write_all_at(&self.pending, self.durable_len)
                .and_then(|()| self.active.sync_data());
            if let Err(e) = r {
                let _ = self.active.set_len(self.durable_len);
                return Err(AppendError::Io(e));
            }
            self.durable_len += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(self.end())
    }

    /// Whether the active segment holds records (synced or not).
    fn has_records(&self) -> bool {
        self.durable_len + self.pending.len() as u64 > HEADER.len() as u64
    }

    /// The durable end.
    pub fn end(&self) -> Position {
        Position {
            segment: self.active_no,
            offset: self.durable_len,
        }
    }

    /// Seals the active segment (synced, with its sidecar) and starts the next.
    fn rotate(&mut self) -> Result<(), AppendError> {
        self.sync()?;
        // A reused file is longer than what this segment wrote: cut its old
        // records off, so that a sealed segment ends at its last record.
        if self.active.metadata()?.len() > self.durable_len {
            self.active.set_len(self.durable_len)?;
            self.active.sync_data()?;
        }
        write_sidecar(
            &self.dir,
            self.active_no,
            self.active_first_ts,
            &self.active_counters,
        )?;
        let next = self.active_no + 1;
        let file = start_segment(&self.dir, &mut self.spares, next)?;
        File::open(&self.dir)?.sync_all()?;
        self.sealed.insert(
            self.active_no,
            SegInfo {
                len: self.durable_len,
                first_ts: self.active_first_ts,
            },
        );
        self.active = file;
        self.active_no = next;
        self.durable_len = HEADER.len() as u64;
        self.active_first_ts = None;
        self.active_counters.clear();
        Ok(())
    }

    /// Deletes the sealed segments wholly before `upto` (committed to the
    /// store), keeping up to [`MAX_SPARES`] of them for reuse. Returns how
    /// many went.
    pub fn release(&mut self, upto: Position) -> io::Result<usize> {
        self.committed = self.committed.max(upto);
        // Everything synced is committed: start a fresh active segment so
        // that the old one can go now (not only when it is full).
        if upto >= self.end() && self.pending.is_empty() && self.has_records() {
            self.rotate().map_err(|e| match e {
                AppendError::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
        }
        let gone: Vec<(u64, u64)> = self
            .sealed
            .iter()
            .filter(|(n, s)| **n < upto.segment || (**n == upto.segment && upto.offset >= s.len))
            .map(|(n, s)| (*n, s.len))
            .collect();
        for &(n, len) in &gone {
            let path = seg_path(&self.dir, n);
            if !self.keep_spare(n, len, &path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let _ = std::fs::remove_file(ctr_path(&self.dir, n));
            self.sealed.remove(&n);
        }
        Ok(gone.len())
    }

    /// Keeps committed segment `n` as a spare if there is room, it is
    /// well filled (a small file saves little) and it has the header
    /// (an old segment's records would check under seed 0).
    fn keep_spare(&mut self, n: u64, len: u64, path: &Path) -> bool {
        if self.spares.len() >= MAX_SPARES || len < self.cfg.segment_bytes / 2 {
            return false;
        }
        let has_header = File::open(path)
            .and_then(|f| Layout::read(n, &f))
            .is_ok_and(|l| l.start > 0);
        if has_header && std::fs::rename(path, spare_path(&self.dir, n)).is_ok() {
            self.spares.insert(0, n);
            return true;
        }
        false
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The position after the record (what to commit).
    pub end: Position,
    pub ts_us: i64,
    pub agent: String,
    pub counters: (u32, u32),
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Reads records in order from a position.
pub struct Reader {
    dir: PathBuf,
    pos: Position,
    file: Option<File>,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    corrupt: u64,
    next_ts: Option<i64>,
    /// The open segment's layout.
    layout: Layout,
    /// The open segment's length once it is sealed (it no longer changes).
    sealed_len: Option<u64>,
}

const READ_CHUNK: usize = 1 << 20;

impl Reader {
    pub fn open(dir: &Path, from: Position) -> io::Result<Reader> {
        Ok(Reader {
            dir: dir.to_owned(),
            pos: from,
            file: None,
            buf: Vec::new(),
            buf_at: 0,
            corrupt: 0,
            next_ts: None,
            layout: Layout { start: 0, seed: 0 },
            sealed_len: None,
        })
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    pub fn corrupt_skipped(&self) -> u64 {
        self.corrupt
    }

    /// The time of the record after the last one read, if it was seen.
    pub fn next_ts_us(&self) -> Option<i64> {
        self.next_ts
    }

    /// Moves to the first segment after the current one that exists.
    fn next_segment(&mut self, durable: Position) -> io::Result<bool> {
        let nums = segment_numbers(&self.dir).map_err(|e| io::Error::other(e.to_string()))?;
        match nums
            .into_iter()
            .find(|&n| n > self.pos.segment && n <= durable.segment)
        {
            Some(n) => {
                self.pos = Position {
                    segment: n,
                    offset: 0,
                };
                self.file = None;
                self.buf.clear();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Makes `buf` cover `[off, off + need)` of the current segment as far
    /// as `limit` allows. Returns the bytes available from `off`.
    fn fill(&mut self, off: u64, need: usize, limit: u64) -> io::Result<usize> {
        let have_end = self.buf_at + self.buf.len() as u64;
        if off >= self.buf_at && off + need as u64 <= have_end {
            return Ok((have_end - off) as usize);
        }
        let want = (limit.saturating_sub(off)).min(need.max(READ_CHUNK) as u64) as usize;
        self.buf.resize(want, 0);
        let mut got = 0;
        if let Some(f) = &self.file {
            while got < want {
                match f.read_at(&mut self.buf[got..], off + got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
        }
        self.buf.truncate(got);
        self.buf_at = off;
        Ok(got)
    }

    /// The next record before `durable` (only synced bytes), skipping
    /// corrupt ones; `None` when there is none yet.
    pub fn next(&mut self, durable: Position) -> io::Result<Option<Record>> {
        loop {
            if self.pos >= durable {
                return Ok(None);
            }
            if self.file.is_none() {
                match File::open(seg_path(&self.dir, self.pos.segment)) {
                    Ok(f) => {
                        self.layout = Layout::read(self.pos.segment, &f)?;
                        self.pos.offset = self.pos.offset.max(self.layout.start);
                        self.sealed_len = None;
                        self.file = Some(f);
                        self.buf.clear();
                        self.buf_at = 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if !self.next_segment(durable)? {
                            return Ok(None);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // How far this segment may be read.
            let limit = if self.pos.segment < durable.segment {
                match (&self.file, self.sealed_len) {
                    (_, Some(len)) => len,
                    (Some(f), None) => {
                        let len = f.metadata()?.len();
                        self.sealed_len = Some(len);
                        len
                    }
                    (None, None) => 0,
                }
            } else {
                durable.offset
            };
            if self.pos.offset >= limit {
                if self.pos.segment < durable.segment && self.next_segment(durable)? {
                    continue;
                }
                return Ok(None);
            }
            let off = self.pos.offset;
            let avail = self.fill(off, 8, limit)?;
            let start = (off - self.buf_at) as usize;
            let len = if avail >= 8 {
                u32::from_le_bytes(self.buf[start..start + 4].try_into().unwrap_or([0; 4])) as usize
            } else {
                0
            };
            let whole = 8 + len.min(MAX_RECORD);
            let avail = self.fill(off, whole, limit)?;
            let start = (off - self.buf_at) as usize;
            let parsed = if avail >= whole {
                parse(&self.buf[start..start + avail.min(whole)], self.layout.seed)
            } else {
                None
            };
            match parsed {
                Some(p) => {
                    let rec = Record {
                        end: Position {
                            segment: self.pos.segment,
                            offset: off + p.size as u64,
                        },
                        ts_us: p.ts,
                        agent: p.agent.to_owned(),
                        counters: p.counters,
                        kind: p.kind,
                        payload: p.payload.to_vec(),
                    };
                    self.pos = rec.end;
                    self.next_ts = None;
                    // Peek at the next record's time, if it is in the buffer.
                    let next = start + p.size;
                    if let Some(n) = self
                        .buf
                        .get(next..)
                        .and_then(|b| parse(b, self.layout.seed))
                    {
                        self.next_ts = Some(n.ts);
                    }
                    return Ok(Some(rec));
                }
                None => {
                    // Corrupt: find the next valid record in this segment.
                    self.corrupt += 1;
                    let seg_bytes = {
                        let mut v = vec![0u8; (limit - off).min(MAX_SCAN) as usize];
                        if let Some(f) = &self.file {
                            f.read_exact_at(&mut v, off)?;
                        }
                        v
                    };
                    match resync(&seg_bytes, 1, self.layout.seed) {
                        Some(skip) => {
                            self.pos.offset = off + skip as u64;
                        }
                        None => {
                            self.pos.offset = limit;
                        }
                    }
                    self.buf.clear();
                    self.buf_at = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, seg: u64, max: u64) -> Config {
        Config {
            dir: dir.to_owned(),
            segment_bytes: seg,
            max_bytes: max,
        }
    }

    fn fill(sp: &mut Spool, n: u32, from: u32) {
        for i in from..from + n {
            let agent = format!("{:03}", i % 7);
            let payload = vec![i as u8; 50 + (i as usize * 37) % 900];
            sp.append(
                i64::from(i),
                Tag {
                    agent: &agent,
                    counters: (1, i),
                },
                1,
                &payload,
            )
            .unwrap();
        }
    }

    fn read_all(dir: &Path, from: Position, end: Position) -> (Vec<Record>, u64) {
        let mut r = Reader::open(dir, from).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next(end).unwrap() {
            out.push(rec);
        }
        (out, r.corrupt_skipped())
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_release_deletes() {
        let d = tempfile::tempdir().unwrap();
        let (mut sp, rec) = Spool::open(cfg(d.path(), 8 << 10, 1 << 30)).unwrap();
        assert_eq!(rec.bytes, 0);
        fill(&mut sp, 300, 0);
        let end = sp.sync().unwrap();
        assert!(sp.segments() > 5, "{}", sp.segments());
        let (recs, bad) = read_all(d.path(), rec.start, end);
        assert_eq!((recs.len(), bad), (300, 0));
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.counters, (1, i as u32));
            assert_eq!(r.payload.len(), 50 + (i * 37) % 900);
        }
        // Commit up to record 150: the segments before its segment go.
        let mid = recs[150].end;
        let before = sp.segments();
        let gone = sp.release(mid).unwrap();
        assert!(gone > 0 && sp.segments() == before - gone);
        let (rest, _) = read_all(d.path(), mid, end);
        assert_eq!(rest.len(), 149);
    }

    #[test]
    fn a_torn_tail_is_cut_and_counters_are_recovered() {
        let d = tempfile::tempdir().unwrap();
        let (mut sp, _) = Spool::open(cfg(d.path(), 1 << 20, 1 << 30)).unwrap();
        fill(&mut sp, 20, 0);
        let end = sp.sync().unwrap();
        drop(sp);
        // A crash mid-write: half a record after the synced ones.
        let path = seg_path(d.path(), end.segment);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let (mut sp, rec) = Spool::open(cfg(d.path(), 1 << 20, 1 << 30)).unwrap();
        assert_eq!(rec.truncated_bytes, 10);
        assert_eq!(rec.counters.get("005"), Some(&(1, 19)));
        assert_eq!(rec.counters.len(), 7);
        fill(&mut sp, 5, 20);
        let end = sp.sync().unwrap();
        let (recs, bad) = read_all(d.path(), rec.start, end);
        assert_eq!((recs.len(), bad), (25, 0));
    }

    #[test]
    fn a_flipped_byte_skips_exactly_one_record() {
        let d = tempfile::tempdir().unwrap();
        let (mut sp, rec) = Spool::open(cfg(d.path(), 1 << 20, 1 << 30)).unwrap();
        fill(&mut sp, 40, 0);
        let end = sp.sync().unwrap();
        let (recs, _) = read_all(d.path(), rec.start, end);
        drop(sp);
        // Inside record 10's payload.
        let at = recs[9].end.offset + 40;
        let path = seg_path(d.path(), end.segment);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
        drop(f);
        let (_sp, rec2) = Spool::open(cfg(d.path(), 1 << 20, 1 << 30)).unwrap();
        assert_eq!(rec2.truncated_bytes, 0);
        assert_eq!(rec2.corrupt_records, 1);
        let (recs2, bad) = read_all(d.path(), rec.start, rec2.end);
        assert_eq!((recs2.len(), bad), (39, 1));
        assert!(recs2.iter().all(|r| r.counters != (1, 10)));
    }

    fn spares(dir: &Path) -> usize {
        numbered(dir, ".spare").unwrap().len()
    }

    #[test]
    fn reused_segments_never_bring_back_their_old_records() {
        let d = tempfile::tempdir().unwrap();
        let (mut sp, rec) = Spool::open(cfg(d.path(), 8 << 10, 1 << 30)).unwrap();
        // First life: records with counters (1, i), all committed.
        fill(&mut sp, 300, 0);
        let end = sp.sync().unwrap();
        assert_eq!(read_all(d.path(), rec.start, end).0.len(), 300);
        sp.release(end).unwrap();
        assert_eq!(spares(d.path()), MAX_SPARES);
        // Second life, with lower counters: one record fills the active
        // segment (started before the spares existed), the next ones go to
        // a spare; synced, then a crash (no rotation).
        let tag = Tag {
            agent: "000",
            counters: (0, 0),
        };
        sp.append(1000, tag, 1, &[b'x'; 8150]).unwrap();
        for i in 1..4u32 {
            let tag = Tag {
                agent: "000",
                counters: (0, i),
            };
            sp.append(1000 + i64::from(i), tag, 1, b"second life")
                .unwrap();
        }
        assert_eq!(spares(d.path()), MAX_SPARES - 1);
        let end2 = sp.sync().unwrap();
        let path = seg_path(d.path(), end2.segment);
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(
            on_disk > end2.offset + 1000,
            "not a reused file: {on_disk} bytes"
        );
        drop(sp);
        let (mut sp, rec2) = Spool::open(cfg(d.path(), 8 << 10, 1 << 30)).unwrap();
        // The old records behind the new ones are not records any more.
        assert_eq!(rec2.corrupt_records, 0);
        assert_eq!(rec2.counters.len(), 1);
        assert_eq!(rec2.counters.get("000"), Some(&(0, 3)));
        let (recs, bad) = read_all(d.path(), end, rec2.end);
        assert_eq!(bad, 0);
        assert_eq!(
            recs.iter().map(|r| r.counters).collect::<Vec<_>>(),
            vec![(0, 0), (0, 1), (0, 2), (0, 3)]
        );
        assert!(recs[1..].iter().all(|r| r.payload == b"second life"));
        // More lives: every record comes back once, sealed reused segments
        // end at their last record, and the spares stay bounded.
        let mut from = rec2.end;
        for round in 0..4u32 {
            fill(&mut sp, 200, round * 1000);
            let e = sp.sync().unwrap();
            let (recs, bad) = read_all(d.path(), from, e);
            assert_eq!((recs.len(), bad), (200, 0), "round {round}");
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.counters, (1, round * 1000 + i as u32));
            }
            for (n, info) in &sp.sealed {
                let len = std::fs::metadata(seg_path(d.path(), *n)).unwrap().len();
                assert_eq!(len, info.len, "segment {n}");
            }
            sp.release(e).unwrap();
            assert!(spares(d.path()) <= MAX_SPARES);
            from = e;
        }
    }

    /// A record as segments without the header hold it (CRC from 0).
    fn old_record(ts: i64, agent: &str, counters: (u32, u32), payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&ts.to_le_bytes());
        body.extend_from_slice(&counters.0.to_le_bytes());
        body.extend_from_slice(&counters.1.to_le_bytes());
        body.push(agent.len() as u8);
        body.extend_from_slice(agent.as_bytes());
        body.push(1);
        body.extend_from_slice(payload);
        let mut r = (body.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn segments_without_the_header_are_still_read() {
        let d = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for i in 0..5u32 {
            old.extend(old_record(
                i64::from(i),
                "042",
                (3, i),
                b"from an older version",
            ));
        }
        std::fs::write(seg_path(d.path(), 7), &old).unwrap();
        let (mut sp, rec) = Spool::open(cfg(d.path(), 8 << 10, 1 << 30)).unwrap();
        assert_eq!((rec.truncated_bytes, rec.corrupt_records), (0, 0));
        assert_eq!(rec.counters.get("042"), Some(&(3, 4)));
        assert_eq!(
            rec.start,
            Position {
                segment: 7,
                offset: 0
            }
        );
        fill(&mut sp, 3, 10);
        let end = sp.sync().unwrap();
        let (recs, bad) = read_all(d.path(), rec.start, end);
        assert_eq!((recs.len(), bad), (8, 0));
        assert!(recs[..5]
            .iter()
            .all(|r| r.payload == b"from an older version"));
        assert_eq!(recs[5].counters, (1, 10));
        // Committed, an old segment is deleted, never reused.
        sp.release(recs[4].end).unwrap();
        assert!(!seg_path(d.path(), 7).exists());
        assert_eq!(spares(d.path()), 0);
    }

    #[test]
    fn full_refuses_until_released_and_a_second_open_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (mut sp, _) = Spool::open(cfg(d.path(), 4 << 10, 16 << 10)).unwrap();
        let mut n = 0;
        let err = loop {
            match sp.append(
                0,
                Tag {
                    agent: "001",
                    counters: (0, n),
                },
                1,
                &[7; 500],
            ) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, AppendError::Full), "{err}");
        assert!(n > 20 && sp.bytes() <= 16 << 10);
        let end = sp.sync().unwrap();
        assert!(matches!(
            Spool::open(cfg(d.path(), 4 << 10, 16 << 10)),
            Err(OpenError::Locked(_))
        ));
        sp.release(end).unwrap();
        sp.append(
            0,
            Tag {
                agent: "001",
                counters: (0, n),
            },
            1,
            &[7; 500],
        )
        .unwrap();
    }
}
