//! Keys and signed checkpoints: an Ed25519 key per ledger in the signed-note key formats, and
//! checkpoints in the C2SP `tlog-checkpoint` / `signed-note` text format. SPEC.md §8–§9.
use super::canon::Hash;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use ulid::Ulid;

/// Signature algorithm byte for Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;

/// Origin line of the checkpoints of session `id`.
pub fn origin(id: &Ulid) -> String {
    format!("harness/{id}")
}

/// Signed-note key ID: the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public key that checks checkpoint signatures (signed-note verifier key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    /// Key name.
    pub name: String,
    /// Key ID.
    pub id: [u8; 4],
    /// The Ed25519 key.
    pub key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<NoteVerifier, String> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("verifier key is not NAME+ID+KEY".into());
        };
        let raw = B64
            .decode(key_b64)
            .map_err(|_| "verifier key: bad base64")?;
        let [alg, key @ ..] = raw.as_slice() else {
            return Err("verifier key: empty".into());
        };
        if *alg != ALG_ED25519 {
            return Err(format!("verifier key: algorithm {alg} is not Ed25519 (1)"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| "verifier key: not 32 bytes")?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| "verifier key: not a valid point")?;
        let id = key_id(name, &key);
        if hex::encode(id) != id_hex {
            return Err("verifier key: key ID does not match name and key".into());
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The text form `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(raw))
    }
}

/// The ledger's signing key.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer for `seed`, named `harness-<first 16 hex digits of SHA-256(public key)>`.
    pub fn from_seed(seed: [u8; 32]) -> NoteSigner {
        let key = SigningKey::from_bytes(&seed);
        let name = format!(
            "harness-{}",
            &hex::encode(Sha256::digest(key.verifying_key().as_bytes()))[..16]
        );
        let id = key_id(&name, &key.verifying_key());
        NoteSigner { name, id, key }
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<NoteSigner, String> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or("signer key does not start with PRIVATE+KEY+")?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("signer key is not PRIVATE+KEY+NAME+ID+KEY".into());
        };
        let raw = B64.decode(b64).map_err(|_| "signer key: bad base64")?;
        let [ALG_ED25519, seed @ ..] = raw.as_slice() else {
            return Err("signer key: not Ed25519".into());
        };
        let seed: [u8; 32] = seed.try_into().map_err(|_| "signer key: not 32 bytes")?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, &key.verifying_key());
        if hex::encode(id) != id_hex {
            return Err("signer key: key ID does not match".into());
        }
        Ok(NoteSigner {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The text form of the private key.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(raw)
        )
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a checkpoint body, returning the whole signed note.
    pub fn sign(&self, body: &str) -> String {
        let sig = self.key.sign(body.as_bytes());
        let mut raw = self.id.to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(raw))
    }
}

/// A checkpoint: the signed statement "session `origin` had `size` entries with root `root`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `harness/<ULID>`.
    pub origin: String,
    /// Number of entries covered (seq 0 … size−1).
    pub size: u64,
    /// RFC 9162 root hash of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: origin, size, base64 root, each followed by a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a signed note and checks its signature by `key`. Signatures by other keys are
    /// ignored; at least one must be by `key` and valid.
    pub fn open(note: &str, key: &NoteVerifier) -> Result<Checkpoint, String> {
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or("not a signed note (no blank line)")?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err("checkpoint body is not ORIGIN, SIZE, ROOT".into());
        };
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| size == "0" || !size.starts_with('0'))
            .ok_or("checkpoint size is not a decimal number")?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or("checkpoint root is not 32 bytes of base64")?;
        if !sigs.ends_with('\n') {
            return Err("signature block does not end with a newline".into());
        }
        let mut found = false;
        for line in sigs.lines() {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or("signature line does not start with \u{2014}")?;
            let (name, b64) = rest.split_once(' ').ok_or("malformed signature line")?;
            let raw = B64.decode(b64).map_err(|_| "signature: bad base64")?;
            if name != key.name || raw.len() < 4 || raw[..4] != key.id {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_slice(&raw[4..])
                .map_err(|_| "signature: not 64 bytes")?;
            key.key
                .verify_strict(body.as_bytes(), &sig)
                .map_err(|_| "bad signature")?;
            found = true;
        }
        if !found {
            return Err(format!("no signature by key {}", key.name));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open() {
        let s = NoteSigner::from_seed([7; 32]);
        let v = NoteVerifier::parse(&s.verifier().to_text()).unwrap();
        assert_eq!(v, s.verifier());
        assert_eq!(
            NoteSigner::parse(&s.to_text()).unwrap().to_text(),
            s.to_text()
        );
        let cp = Checkpoint {
            origin: "harness/01J00000000000000000000000".into(),
            size: 3,
            root: [9; 32],
        };
        let note = s.sign(&cp.body());
        assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
        let forged = note.replace("\n3\n", "\n4\n");
        assert_eq!(Checkpoint::open(&forged, &v).unwrap_err(), "bad signature");
        let other = NoteSigner::from_seed([8; 32]).verifier();
        assert!(Checkpoint::open(&note, &other).is_err());
    }
}
