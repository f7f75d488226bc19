//! The spool's segment log on disk: append-only files of CRC32C-checked
//! records, group-committed with fdatasync, recovered after a crash.
//!
//! Owns the on-disk format and its invariants; knows nothing of events (the
//! payload is opaque) except that every record carries a tag (agent ID and
//! its receive counters) whose maximum per agent is recovered at open.
//!
//! Files in the directory: `spool.lock` (flock: one process per spool),
//! `spool.id` (random hex identity, the key of the committed position in
//! the store), `{n:020}.seg` (segments, in order) and `{n:020}.ctr` (the
//! per-agent maximum counters and the first record's time of a sealed
//! segment, so that opening does not rescan sealed segments).
//!
//! Record: `len u32 LE` (bytes after the CRC) · `crc32c u32 LE` (of those
//! bytes) · `ts_us i64` · `global u32` · `local u32` · `agent_len u8` ·
//! agent · `kind u8` · payload.
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
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}
fn ctr_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.ctr"))
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

/// Parses the record at the start of `b` (`None`: incomplete or corrupt).
fn parse(b: &[u8]) -> Option<Parsed<'_>> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    if !(HEAD - 8 + 1..=MAX_RECORD).contains(&len) || b.len() < 8 + len {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let body = &b[8..8 + len];
    if crc32c::crc32c(body) != crc {
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

/// Scans a whole segment: counters, first time, the valid length (the
/// end of the last valid record) and corrupt records skipped before it.
fn scan(bytes: &[u8]) -> (Counters, Option<i64>, u64, u64) {
    let mut counters = HashMap::new();
    let mut first = None;
    let mut off = 0usize;
    let mut valid_end = 0usize;
    let mut corrupt = 0;
    while off < bytes.len() {
        match parse(&bytes[off..]) {
            Some(p) => {
                raise(&mut counters, p.agent, p.counters);
                first.get_or_insert(p.ts);
                off += p.size;
                valid_end = off;
            }
            None => match resync(bytes, off + 1) {
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
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(8)).find(|&o| parse(&bytes[o..]).is_some())
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
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".seg")?.parse().ok()
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
                    let (c, ts, valid, corrupt) = scan(&bytes);
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
        let active_no = nums.last().map_or(1, |n| n + 1);
        let path = seg_path(&dir, active_no);
        let active = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
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
            offset: 0,
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
                durable_len: 0,
                active_first_ts: None,
                active_counters: HashMap::new(),
                pending: Vec::with_capacity(1 << 20),
                committed: Position::default(),
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
            && self.durable_len + self.pending.len() as u64 > 0
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
        let crc = crc32c::crc32c(&p[start + 8..]);
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
        write_sidecar(
            &self.dir,
            self.active_no,
            self.active_first_ts,
            &self.active_counters,
        )?;
        let next = self.active_no + 1;
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(seg_path(&self.dir, next))?;
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
        self.durable_len = 0;
        self.active_first_ts = None;
        self.active_counters.clear();
        Ok(())
    }

    /// Deletes the sealed segments wholly before `upto` (committed to the
    /// store). Returns how many.
    pub fn release(&mut self, upto: Position) -> io::Result<usize> {
        self.committed = self.committed.max(upto);
        // Everything synced is committed: start a fresh active segment so
        // that the old one can go now (not only when it is full).
        if upto >= self.end() && self.pending.is_empty() && self.durable_len > 0 {
            self.rotate().map_err(|e| match e {
                AppendError::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
        }
        let gone: Vec<u64> = self
            .sealed
            .iter()
            .filter(|(n, s)| **n < upto.segment || (**n == upto.segment && upto.offset >= s.len))
            .map(|(n, _)| *n)
            .collect();
        for n in &gone {
            match std::fs::remove_file(seg_path(&self.dir, *n)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let _ = std::fs::remove_file(ctr_path(&self.dir, *n));
            self.sealed.remove(n);
        }
        Ok(gone.len())
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
                match &self.file {
                    Some(f) => f.metadata()?.len(),
                    None => 0,
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
                parse(&self.buf[start..start + avail.min(whole)])
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
                    if let Some(n) = self.buf.get(next..).and_then(parse) {
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
                    match resync(&seg_bytes, 1) {
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
