//! Bodies: exact bytes, inline (UTF-8 text or base64) or in a content-addressed blob, always
//! with their length and SHA-256. Large bodies stream to a blob without being held in memory.
use super::{fsync_dir, LedgerError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Bodies longer than this go to a blob when written through [`super::Ledger::body`].
pub const INLINE_MAX: usize = 64 * 1024;

/// The exact bytes of a body (or chunk), as the ledger records them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "encoding", rename_all = "snake_case", try_from = "BodyMembers")]
pub enum Body {
    /// The bytes are valid UTF-8 and are `text`.
    Utf8 {
        /// The bytes as a string.
        text: String,
        /// Number of bytes.
        len: u64,
        /// SHA-256 (hex) of the bytes.
        sha256: String,
    },
    /// The bytes are `data`, base64 (RFC 4648 §4, padded).
    Base64 {
        /// The bytes in base64.
        data: String,
        /// Number of bytes.
        len: u64,
        /// SHA-256 (hex) of the bytes.
        sha256: String,
    },
    /// The bytes are in the blob `blobs/<sha256>`.
    Blob {
        /// Number of bytes.
        len: u64,
        /// SHA-256 (hex) of the bytes, which is also the blob's file name.
        sha256: String,
    },
}

/// A body's members as written, read flat and then told apart by `encoding`: serde reads an
/// internally tagged enum by first buffering all its members, which `verify` paid on every
/// body. A member the variant does not have is ignored whatever it holds, as serde's derived
/// reading of the variant ignores it.
#[derive(Deserialize)]
struct BodyMembers {
    encoding: String,
    len: u64,
    sha256: String,
    text: Option<serde_json::Value>,
    data: Option<serde_json::Value>,
}

impl TryFrom<BodyMembers> for Body {
    type Error = String;

    fn try_from(m: BodyMembers) -> Result<Body, String> {
        let (len, sha256) = (m.len, m.sha256);
        let string = |name: &str, value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(format!(
                "`{name}`: invalid type: {other}, expected a string"
            )),
            None => Err(format!("missing field `{name}`")),
        };
        match m.encoding.as_str() {
            "utf8" => Ok(Body::Utf8 {
                text: string("text", m.text)?,
                len,
                sha256,
            }),
            "base64" => Ok(Body::Base64 {
                data: string("data", m.data)?,
                len,
                sha256,
            }),
            "blob" => Ok(Body::Blob { len, sha256 }),
            other => Err(format!(
                "unknown variant `{other}`, expected one of `utf8`, `base64`, `blob`"
            )),
        }
    }
}

impl Body {
    /// An inline body holding exactly `bytes`: UTF-8 text if they are UTF-8, else base64.
    pub fn from_bytes(bytes: &[u8]) -> Body {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let len = bytes.len() as u64;
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Utf8 {
                text: text.to_owned(),
                len,
                sha256,
            },
            Err(_) => Body::Base64 {
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
                len,
                sha256,
            },
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Utf8 { len, .. } | Body::Base64 { len, .. } | Body::Blob { len, .. } => *len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SHA-256 (hex) of the bytes.
    pub fn sha256(&self) -> &str {
        match self {
            Body::Utf8 { sha256, .. } | Body::Base64 { sha256, .. } | Body::Blob { sha256, .. } => {
                sha256
            }
        }
    }

    /// The bytes of an inline body (`None` for a blob, or for base64 that does not decode).
    pub fn inline_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Body::Utf8 { text, .. } => Some(text.as_bytes().to_vec()),
            Body::Base64 { data, .. } => {
                base64::engine::general_purpose::STANDARD.decode(data).ok()
            }
            Body::Blob { .. } => None,
        }
    }

    /// Checks that an inline body's bytes have the recorded length and SHA-256.
    pub fn check_inline(&self) -> Result<(), String> {
        // Text is checked where it lies; only base64 is decoded into a copy.
        let bytes: std::borrow::Cow<'_, [u8]> = match self {
            Body::Utf8 { text, .. } => text.as_bytes().into(),
            Body::Base64 { data, .. } => {
                match base64::engine::general_purpose::STANDARD.decode(data) {
                    Ok(bytes) => bytes.into(),
                    Err(_) => return Err("body: base64 does not decode".into()),
                }
            }
            Body::Blob { .. } => return Ok(()),
        };
        if bytes.len() as u64 != self.len() {
            return Err(format!(
                "body: {} bytes but len says {}",
                bytes.len(),
                self.len()
            ));
        }
        // Compared as digests: no hex string made per body.
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if super::canon::decode_hash(self.sha256()) != Some(digest) {
            return Err("body: sha256 does not match its bytes".into());
        }
        Ok(())
    }
}

/// Path of the blob with SHA-256 `sha256` (hex) in ledger directory `dir`.
pub fn blob_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join("blobs").join(sha256)
}

/// Writes a body to a content-addressed blob piece by piece, hashing as it goes; memory use
/// does not depend on the body's size. [`BlobWriter::finish`] makes it durable and names it.
pub struct BlobWriter {
    blobs: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    len: u64,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("tmp", &self.tmp)
            .field("len", &self.len)
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(dir: &Path) -> Result<BlobWriter, LedgerError> {
        let blobs = dir.join("blobs");
        let tmp = blobs.join(format!(".tmp-{}", ulid::Ulid::new()));
        let file = super::file_options(0o644)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LedgerError::io(&tmp, e))?;
        Ok(BlobWriter {
            blobs,
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Appends `bytes` to the blob.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let file = self.file.as_mut().ok_or_else(|| LedgerError::Failed {
            path: self.tmp.clone(),
            reason: "blob writer already failed".into(),
        })?;
        if let Err(e) = file.write_all(bytes) {
            self.file = None;
            return Err(LedgerError::io(&self.tmp, e));
        }
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes the blob durable (fsync, rename to `blobs/<sha256>`, fsync the directory) and
    /// returns the body that refers to it. Resolve entries that use it only after this.
    pub fn finish(mut self) -> Result<Body, LedgerError> {
        let file = self.file.take().ok_or_else(|| LedgerError::Failed {
            path: self.tmp.clone(),
            reason: "blob writer already failed".into(),
        })?;
        file.sync_all().map_err(|e| LedgerError::io(&self.tmp, e))?;
        drop(file);
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let path = self.blobs.join(&sha256);
        std::fs::rename(&self.tmp, &path).map_err(|e| LedgerError::io(&path, e))?;
        fsync_dir(&self.blobs)?;
        Ok(Body::Blob {
            len: self.len,
            sha256,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` as a blob in ledger directory `dir` (durable on return).
pub(crate) fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Body, LedgerError> {
    let mut w = BlobWriter::new(dir)?;
    w.write(bytes)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_text_and_binary() {
        let b = Body::from_bytes(b"hello");
        assert!(matches!(b, Body::Utf8 { ref text, len: 5, .. } if text == "hello"));
        assert_eq!(
            b.sha256(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let b = Body::from_bytes(&[0xff, 0x00]);
        assert!(matches!(b, Body::Base64 { ref data, len: 2, .. } if data == "/wA="));
        assert_eq!(b.inline_bytes().unwrap(), vec![0xff, 0x00]);
        b.check_inline().unwrap();
    }

    #[test]
    fn each_encoding_reads_back_and_a_missing_member_is_named() {
        let blob = Body::Blob {
            len: 9,
            sha256: "ab".repeat(32),
        };
        for b in [Body::from_bytes(b"hi"), Body::from_bytes(&[0xff]), blob] {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(serde_json::from_str::<Body>(&json).unwrap(), b, "{json}");
        }
        let err = |json: &str| serde_json::from_str::<Body>(json).unwrap_err().to_string();
        let sha = "ab".repeat(32);
        assert!(err(&format!(
            r#"{{"encoding":"utf8","len":1,"sha256":"{sha}"}}"#
        ))
        .contains("missing field `text`"));
        assert!(err(&format!(
            r#"{{"data":"AA==","encoding":"base64","sha256":"{sha}"}}"#
        ))
        .contains("missing field `len`"));
        assert!(err(&format!(
            r#"{{"encoding":"gzip","len":1,"sha256":"{sha}"}}"#
        ))
        .contains("unknown variant `gzip`"));
        let utf8_number = format!(r#"{{"encoding":"utf8","len":1,"sha256":"{sha}","text":1}}"#);
        assert!(err(&utf8_number).contains("expected a string"));
        // What a variant does not have is ignored, whatever it holds (as before bodies were
        // read flat).
        let blob = format!(r#"{{"data":5,"encoding":"blob","len":1,"sha256":"{sha}","text":[0]}}"#);
        assert!(matches!(
            serde_json::from_str::<Body>(&blob).unwrap(),
            Body::Blob { len: 1, .. }
        ));
        let utf8 =
            format!(r#"{{"data":{{}},"encoding":"utf8","len":1,"sha256":"{sha}","text":"x"}}"#);
        assert!(matches!(
            serde_json::from_str::<Body>(&utf8).unwrap(),
            Body::Utf8 { .. }
        ));
    }
}
