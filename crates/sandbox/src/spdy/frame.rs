//! SPDY/3.1 framing, as much as kubectl's port-forward uses: control frames (SYN_STREAM,
//! SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE) and data frames, with the
//! zlib-compressed header blocks (preset dictionary from the SPDY/3 spec, §2.6.10.1).

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// The SPDY/3 header-compression dictionary (spec §2.6.10.1), 1423 bytes.
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// Control frame types.
pub mod kind {
    /// Opens a stream.
    pub const SYN_STREAM: u16 = 1;
    /// Accepts a stream.
    pub const SYN_REPLY: u16 = 2;
    /// Aborts a stream.
    pub const RST_STREAM: u16 = 3;
    /// Connection settings.
    pub const SETTINGS: u16 = 4;
    /// Liveness check.
    pub const PING: u16 = 6;
    /// Ends the session.
    pub const GOAWAY: u16 = 7;
    /// Flow control.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// FIN flag (last frame of the sender's half of a stream).
pub const FLAG_FIN: u8 = 1;

/// A parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control frame: type, flags, payload.
    Control {
        /// Frame type.
        kind: u16,
        /// Flags.
        flags: u8,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A data frame.
    Data {
        /// Stream.
        stream: u32,
        /// Flags.
        flags: u8,
        /// Bytes.
        data: Vec<u8>,
    },
}

/// Failures of the SPDY layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    /// A frame or header block is malformed.
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    /// The peer speaks another SPDY version.
    #[error("unsupported SPDY version {0}; kubectl speaks SPDY/3.1")]
    Version(u16),
}

/// Splits complete frames off the front of `buf`.
pub fn parse(buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let flags = buf[4];
    let payload: Vec<u8> = buf[8..8 + len].to_vec();
    let frame = if buf[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        Frame::Control {
            kind: u16::from_be_bytes([buf[2], buf[3]]),
            flags,
            payload,
        }
    } else {
        Frame::Data {
            stream: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & 0x7fff_ffff,
            flags,
            data: payload,
        }
    };
    buf.drain(..8 + len);
    Ok(Some(frame))
}

fn header(first: [u8; 4], flags: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + len);
    v.extend_from_slice(&first);
    v.push(flags);
    #[expect(clippy::cast_possible_truncation, reason = "frame lengths are 24-bit")]
    v.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    v
}

/// Encodes a control frame.
pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let k = kind.to_be_bytes();
    let mut v = header([0x80, 0x03, k[0], k[1]], flags, payload.len());
    v.extend_from_slice(payload);
    v
}

/// Encodes a data frame.
pub fn data(stream: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = header((stream & 0x7fff_ffff).to_be_bytes(), flags, bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Decompresses the header blocks of one direction of a session (one zlib stream with the
/// SPDY dictionary, flushed after every block).
pub struct HeaderInflater {
    state: Box<DecompressorOxide>,
    /// Output history; starts with the dictionary so back-references into it resolve.
    window: Vec<u8>,
    started: bool,
}

impl std::fmt::Debug for HeaderInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderInflater").finish_non_exhaustive()
    }
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self {
            state: Box::default(),
            window: DICTIONARY.to_vec(),
            started: false,
        }
    }
}

const WINDOW: usize = 32 * 1024;

impl HeaderInflater {
    /// Inflates one header block into name/value pairs.
    ///
    /// # Errors
    /// A corrupt block.
    pub fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut input = block;
        if !self.started {
            if input.len() < 2 {
                return Err(SpdyError::Malformed("short zlib header"));
            }
            let fdict = input[1] & 0x20 != 0;
            input = &input[if fdict { 6 } else { 2 }..];
            self.started = true;
        }
        let start = self.window.len();
        loop {
            // Room for output after the history.
            let pos = self.window.len();
            self.window.resize(pos + 16 * 1024, 0);
            let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
                | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
            let (status, consumed, written) =
                decompress(&mut self.state, input, &mut self.window, pos, flags);
            self.window.truncate(pos + written);
            input = &input[consumed..];
            match status {
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => break,
                TINFLStatus::HasMoreOutput => continue,
                _ => return Err(SpdyError::Malformed("corrupt header block")),
            }
        }
        let out = self.window[start..].to_vec();
        // Keep only the last window of history (distances never reach further back).
        if self.window.len() > 4 * WINDOW {
            let cut = self.window.len() - WINDOW;
            self.window.drain(..cut);
        }
        parse_pairs(&out)
    }
}

fn parse_pairs(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut i = 0;
    let u32_at = |i: &mut usize| -> Result<usize, SpdyError> {
        let s = b
            .get(*i..*i + 4)
            .ok_or(SpdyError::Malformed("short header block"))?;
        *i += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let n = u32_at(&mut i)?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = u32_at(&mut i)?;
        let k = b
            .get(i..i + kl)
            .ok_or(SpdyError::Malformed("short header name"))?;
        i += kl;
        let vl = u32_at(&mut i)?;
        let v = b
            .get(i..i + vl)
            .ok_or(SpdyError::Malformed("short header value"))?;
        i += vl;
        out.push((
            String::from_utf8_lossy(k).to_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(out)
}

/// Compresses header blocks for the other direction. Uses stored (uncompressed) deflate
/// blocks, which every inflater accepts; the zlib header carries no dictionary id.
#[derive(Debug, Default)]
pub struct HeaderDeflater {
    started: bool,
}

impl HeaderDeflater {
    /// Encodes name/value pairs as one flushed header block.
    pub fn block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a handful of short headers"
        )]
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (k, v) in pairs {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "short header names and values"
            )]
            {
                raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
                raw.extend_from_slice(k.as_bytes());
                raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
                raw.extend_from_slice(v.as_bytes());
            }
        }
        let mut out = Vec::new();
        if !self.started {
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(0xffff) {
            #[expect(clippy::cast_possible_truncation, reason = "chunks are at most 0xffff")]
            let len = chunk.len() as u16;
            out.push(0x00); // BFINAL=0, BTYPE=00 (stored), byte-aligned
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as a zlib sync flush ends: it makes inflaters (Go's
        // compress/flate) hand out the block's bytes instead of waiting for the next block.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn stored_blocks_round_trip_through_the_inflater() {
        let mut d = HeaderDeflater::default();
        let mut i = HeaderInflater::default();
        let first = d.block(&[("streamtype", "data"), ("port", "8200")]);
        assert_eq!(
            i.headers(&first).expect("first"),
            vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), "8200".into())
            ]
        );
        let second = d.block(&[]);
        assert!(i.headers(&second).expect("second").is_empty());
    }

    #[test]
    fn frames_parse_incrementally() {
        let mut buf = control(kind::PING, 0, &7u32.to_be_bytes());
        buf.extend(data(3, FLAG_FIN, b"hi"));
        let mut partial = buf[..5].to_vec();
        assert_eq!(parse(&mut partial).expect("ok"), None);
        assert!(matches!(
            parse(&mut buf).expect("ok"),
            Some(Frame::Control {
                kind: kind::PING,
                ..
            })
        ));
        assert_eq!(
            parse(&mut buf).expect("ok"),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hi".to_vec()
            })
        );
        assert!(buf.is_empty());
    }
}
