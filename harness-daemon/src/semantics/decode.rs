//! `Content-Encoding`: the bytes a body means, from the bytes that were on the wire. The ledger
//! keeps the wire bytes; the parsers, the timeline and the HAR export read what this gives.
//!
//! Codings: `gzip` / `x-gzip` (several members allowed), `deflate` (zlib, as RFC 9110 says;
//! raw deflate too, as some servers send it), `br`, `zstd` (window up to 8 MiB, RFC 9659) and
//! `identity`. Stacked codings (`gzip, br`, or several header lines) are undone last first.
//!
//! Output is bounded by the caller's cap (a decompression bomb costs at most that much memory,
//! and is marked `truncated`); corrupt or cut data never panics: the result keeps what decoded
//! before the fault and says where it was met.
//!
//! ```
//! use harness::semantics::decode::decode;
//! let headers = [("content-encoding".to_string(), "identity".to_string())];
//! let d = decode(&headers, b"{}", 1024);
//! assert_eq!(&*d.body, b"{}");
//! assert!(d.codings.is_empty() && d.error.is_none());
//! ```
use std::borrow::Cow;
use std::io::{BufRead, Read};

/// zstd's window limit for HTTP (RFC 9659 §3: decoders may refuse anything larger).
const ZSTD_MAX_WINDOW: u64 = 8 * 1024 * 1024;

/// One body after undoing its content codings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// What the body means: decoded (as far as it went), or the bytes as given when nothing
    /// was encoded or a coding is unknown.
    pub body: Cow<'a, [u8]>,
    /// The codings named by `Content-Encoding`, lower case, in the order they were applied
    /// (`identity` left out). Empty: the body was not encoded.
    pub codings: Vec<String>,
    /// The decoded body was longer than the cap and was cut there.
    pub truncated: bool,
    /// The first fault met, if any.
    pub error: Option<DecodeError>,
}

impl Decoded<'_> {
    /// Whether `Content-Encoding` named a coding other than `identity`.
    pub fn is_encoded(&self) -> bool {
        !self.codings.is_empty()
    }

    /// The codings as the header said them (`gzip, br`).
    pub fn codings_list(&self) -> String {
        self.codings.join(", ")
    }
}

/// Why a body could not be (fully) decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding this module does not know: the body is left as it was.
    #[error("content-encoding {coding} is not supported")]
    Unsupported {
        /// The coding, lower case.
        coding: String,
    },
    /// The coded data is corrupt, or ends before its coding says it should. The decoded body
    /// holds what came out before that.
    #[error("{coding} data {}: {reason}", if *.eof { "ends early" } else { "is corrupt" })]
    Corrupt {
        /// The coding that failed.
        coding: String,
        /// How far into that coding's input decoding got (for the outermost coding, an
        /// offset into the body as recorded).
        at: u64,
        /// The data ended before its coding's end.
        eof: bool,
        /// Whether `at` is an offset into the recorded body (the outermost coding), not into
        /// the output of another coding.
        outermost: bool,
        /// What the decoder said.
        reason: String,
    },
}

impl DecodeError {
    /// Where the fault was met, in `parse_error.where`'s words: `headers`, `byte N` or
    /// `end (byte N)` (offsets into the recorded body), or `byte N of an inner coding's input`.
    pub fn place(&self) -> String {
        match self {
            DecodeError::Unsupported { .. } => "headers".into(),
            DecodeError::Corrupt {
                at, eof, outermost, ..
            } => {
                let at = if *eof {
                    format!("end (byte {at})")
                } else {
                    format!("byte {at}")
                };
                if *outermost {
                    at
                } else {
                    format!("{at} of an inner coding's input")
                }
            }
        }
    }
}

/// The codings named by every `Content-Encoding` header, in order, lower case, without
/// `identity`.
pub fn codings(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// `body` with the codings of `headers` undone, at most `cap` bytes of it.
pub fn decode<'a>(headers: &[(String, String)], body: &'a [u8], cap: usize) -> Decoded<'a> {
    let codings = codings(headers);
    if let Some(coding) = codings.iter().find(|c| Coding::of(c).is_none()) {
        return Decoded {
            body: Cow::Borrowed(body),
            error: Some(DecodeError::Unsupported {
                coding: coding.clone(),
            }),
            codings,
            truncated: false,
        };
    }
    let mut out = Cow::Borrowed(body);
    let mut truncated = false;
    let mut error = None;
    // The last coding applied is undone first.
    for (i, name) in codings.iter().enumerate().rev() {
        let Some(coding) = Coding::of(name) else {
            continue;
        };
        let layer = undo(coding, &out, cap);
        truncated |= layer.truncated;
        if error.is_none() {
            error = layer.fault.map(|(at, eof, reason)| DecodeError::Corrupt {
                coding: name.clone(),
                at,
                eof,
                outermost: i + 1 == codings.len(),
                reason,
            });
        }
        out = Cow::Owned(layer.bytes);
    }
    Decoded {
        body: out,
        codings,
        truncated,
        error,
    }
}

// === Codings ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn of(name: &str) -> Option<Coding> {
        match name {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            "br" => Some(Coding::Brotli),
            "zstd" => Some(Coding::Zstd),
            _ => None,
        }
    }
}

/// The output of undoing one coding.
struct Layer {
    bytes: Vec<u8>,
    truncated: bool,
    /// (input offset reached, the input ended early, the decoder's words).
    fault: Option<(u64, bool, String)>,
}

/// A byte slice read through, counting what the decoder consumed.
struct Counted<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for Counted<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.data[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.data.len());
    }
}

fn undo(coding: Coding, input: &[u8], cap: usize) -> Layer {
    let mut src = Counted {
        data: input,
        pos: 0,
    };
    let mut out = Vec::new();
    let result = match coding {
        Coding::Gzip => read_capped(
            flate2::bufread::MultiGzDecoder::new(&mut src),
            cap,
            &mut out,
        ),
        Coding::Deflate if is_zlib(input) => {
            read_capped(flate2::bufread::ZlibDecoder::new(&mut src), cap, &mut out)
        }
        Coding::Deflate => read_capped(
            flate2::bufread::DeflateDecoder::new(&mut src),
            cap,
            &mut out,
        ),
        Coding::Brotli => read_capped(
            brotli_decompressor::Decompressor::new(&mut src, 4096),
            cap,
            &mut out,
        ),
        Coding::Zstd => zstd(&mut src, cap, &mut out),
    };
    let at = src.pos as u64;
    let ended = src.pos >= input.len();
    let mut truncated = false;
    let fault = match result {
        Ok(()) if out.len() > cap => {
            out.truncate(cap);
            truncated = true;
            None
        }
        Ok(()) => None,
        Err(e) => {
            let eof = ended || e.kind() == std::io::ErrorKind::UnexpectedEof;
            Some((at, eof, e.to_string()))
        }
    };
    Layer {
        bytes: out,
        truncated,
        fault,
    }
}

/// Reads `r` to its end or to one byte past `cap`, whichever comes first.
fn read_capped(r: impl Read, cap: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    r.take(cap as u64 + 1).read_to_end(out).map(|_| ())
}

/// A zlib stream starts with a header whose check bits make it a multiple of 31.
fn is_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Every zstd frame of the input, one after another.
fn zstd(src: &mut Counted, cap: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
            &mut *src,
            ZSTD_MAX_WINDOW,
        )
        .map_err(|e| {
            let kind = match e {
                ruzstd::decoding::errors::FrameDecoderError::ReadFrameHeaderError(_) => {
                    std::io::ErrorKind::UnexpectedEof
                }
                _ => std::io::ErrorKind::InvalidData,
            };
            std::io::Error::new(kind, e.to_string())
        })?;
        let room = (cap + 1).saturating_sub(out.len());
        decoder.take(room as u64).read_to_end(out)?;
        if out.len() > cap || src.pos >= src.data.len() {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write as _;

    fn ce(v: &str) -> Vec<(String, String)> {
        vec![("Content-Encoding".into(), v.into())]
    }

    /// `b` gzip'd (also the semantics tests' encoder).
    pub(in crate::semantics) fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// `b` as zlib-wrapped deflate, what `Content-Encoding: deflate` means.
    pub(in crate::semantics) fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    const TEXT: &[u8] = b"{\"hello\": \"world\", \"n\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}";

    #[test]
    fn plain_bodies_are_borrowed() {
        for h in [vec![], ce("identity"), ce(" Identity ")] {
            let d = decode(&h, TEXT, 1 << 20);
            assert!(matches!(d.body, Cow::Borrowed(_)));
            assert!(!d.is_encoded() && d.error.is_none() && !d.truncated);
        }
    }

    #[test]
    fn every_coding_decodes() {
        for (name, wire) in [
            ("gzip", gzip(TEXT)),
            ("X-GZIP", gzip(TEXT)),
            ("deflate", zlib(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            (
                "zstd",
                ruzstd::encoding::compress_to_vec(
                    TEXT,
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
        ] {
            let d = decode(&ce(name), &wire, 1 << 20);
            assert_eq!(d.error, None, "{name}");
            assert_eq!(&*d.body, TEXT, "{name}");
            assert_eq!(d.codings, [name.to_ascii_lowercase()]);
        }
    }

    #[test]
    fn stacked_codings_are_undone_last_first() {
        let wire = zlib(&gzip(TEXT));
        let d = decode(&ce("gzip, identity, deflate"), &wire, 1 << 20);
        assert_eq!((&*d.body, &d.error), (TEXT, &None));
        assert_eq!(d.codings_list(), "gzip, deflate");
        // The same from two header lines.
        let h = [ce("gzip"), ce("deflate")].concat();
        assert_eq!(&*decode(&h, &wire, 1 << 20).body, TEXT);
    }

    #[test]
    fn several_members_and_frames() {
        let wire = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(&*decode(&ce("gzip"), &wire, 64).body, b"abcd");
        let z = |b: &[u8]| {
            ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
        };
        let wire = [z(b"ab"), z(b"cd")].concat();
        assert_eq!(&*decode(&ce("zstd"), &wire, 64).body, b"abcd");
    }

    #[test]
    fn output_is_bounded() {
        let zeros = vec![0u8; 1 << 20];
        for (name, wire) in [
            ("gzip", gzip(&zeros)),
            ("deflate", zlib(&zeros)),
            (
                "zstd",
                ruzstd::encoding::compress_to_vec(
                    &zeros[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
        ] {
            let d = decode(&ce(name), &wire, 1000);
            assert_eq!(d.body.len(), 1000, "{name}");
            assert!(d.truncated && d.error.is_none(), "{name}");
        }
        // Exactly at the cap is not cut.
        let wire = gzip(&zeros[..1000]);
        let d = decode(&ce("gzip"), &wire, 1000);
        assert!(!d.truncated && d.body.len() == 1000);
    }

    #[test]
    fn cut_and_corrupt_data_say_where() {
        let wire = gzip(&[TEXT; 20].concat());
        for n in 0..wire.len() {
            let d = decode(&ce("gzip"), &wire[..n], 1 << 20);
            let Some(DecodeError::Corrupt { eof, at, .. }) = d.error else {
                panic!("cut at {n}: {d:?}");
            };
            assert!(eof, "cut at {n}");
            assert_eq!(at, n as u64);
        }
        let mut bad = wire.clone();
        bad[12] ^= 0xff;
        let d = decode(&ce("gzip"), &bad, 1 << 20);
        assert!(
            matches!(d.error, Some(DecodeError::Corrupt { eof: false, .. })),
            "{d:?}"
        );
        for name in ["br", "zstd", "deflate"] {
            for garbage in [&b""[..], b"x", b"\xff\xff\xff\xff\xff\xff\xff\xff"] {
                let d = decode(&ce(name), garbage, 1 << 20);
                assert!(d.error.is_some() || d.body.is_empty(), "{name} {garbage:?}");
            }
        }
    }

    #[test]
    fn unknown_codings_leave_the_body_alone() {
        let d = decode(&ce("gzip, compress"), TEXT, 1 << 20);
        assert_eq!(&*d.body, TEXT);
        assert_eq!(
            d.error.map(|e| (e.place(), e.to_string())),
            Some((
                "headers".into(),
                "content-encoding compress is not supported".into()
            ))
        );
    }
}
