//! TCP framing (PROTOCOL.md §4.1): `u32` little-endian length, then that many bytes.
//!
//! Owns the two-step check of mini-redis (`check` says complete, incomplete or
//! invalid without allocating) and [`FrameReader`], a sans-IO incremental
//! reader for partial reads. A length of 0 or above 65536 is an error, never
//! an allocation.

use crate::codec::MAX_MESSAGE;
use crate::error::{Reject, RejectKind};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole frame: its payload is `buf[4..4 + len]`.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
}

/// Looks at the start of `buf` without consuming it.
pub fn check(buf: &[u8]) -> Result<FrameCheck, Reject> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(FrameCheck::Incomplete);
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 {
        return Err(Reject::new(RejectKind::Format, "zero-length TCP frame"));
    }
    if len > MAX_MESSAGE {
        return Err(Reject::new(
            RejectKind::Size,
            format!("TCP frame length {len} is larger than {MAX_MESSAGE}"),
        ));
    }
    if buf.len() - LEN_PREFIX < len {
        Ok(FrameCheck::Incomplete)
    } else {
        Ok(FrameCheck::Complete(len))
    }
}

/// Writes one frame (length prefix and payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), Reject> {
    if payload.is_empty() || payload.len() > MAX_MESSAGE {
        return Err(Reject::new(
            RejectKind::Size,
            format!(
                "frame payload of {} bytes is outside 1..={MAX_MESSAGE}",
                payload.len()
            ),
        ));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Incremental frame reader: feed bytes as they arrive, take whole frames out.
/// Holds at most one partial frame (≤ 65540 bytes) plus what was fed.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// Set after an error: the stream cannot be resynchronised.
    broken: bool,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_MESSAGE {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `Ok(None)` when more bytes are
    /// needed, or the framing error (after which the reader stays broken).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, Reject> {
        if self.broken {
            return Err(Reject::new(RejectKind::Format, "stream already broken"));
        }
        match check(&self.buf[self.start..]) {
            Ok(FrameCheck::Complete(len)) => {
                let s = self.start + LEN_PREFIX;
                self.start = s + len;
                Ok(Some(&self.buf[s..s + len]))
            }
            Ok(FrameCheck::Incomplete) => Ok(None),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_by_byte_and_coalesced() {
        let mut stream = Vec::new();
        encode_frame(b"hello", &mut stream).unwrap();
        encode_frame(&[7u8; 70], &mut stream).unwrap();
        encode_frame(b"x", &mut stream).unwrap();
        for chunk in [1usize, 3, 4, 5, 1000] {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                r.feed(c);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, vec![b"hello".to_vec(), vec![7u8; 70], b"x".to_vec()]);
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn bad_lengths_are_errors_not_allocations() {
        assert_eq!(check(&[0, 0, 0, 0]).unwrap_err().kind, RejectKind::Format);
        assert_eq!(check(&[1, 0, 1, 0]).unwrap_err().kind, RejectKind::Size);
        assert_eq!(
            check(&[0, 0, 0, 1, b'x']).unwrap_err().kind,
            RejectKind::Size
        );
        assert_eq!(check(&[0, 0, 1, 0]).unwrap(), FrameCheck::Incomplete);
        assert_eq!(check(&[0, 0]).unwrap(), FrameCheck::Incomplete);
        let mut r = FrameReader::new();
        r.feed(&[0, 0, 0, 0]);
        assert!(r.next_frame().is_err());
        assert!(r.next_frame().is_err());
    }
}
