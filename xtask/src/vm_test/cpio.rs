//! A minimal writer of the "newc" cpio format the kernel unpacks as an initramfs.
use anyhow::{Context as _, Result};
use std::collections::BTreeSet;
use std::io::Write;

/// A minimal writer of the "newc" cpio format the kernel unpacks: directories, regular files
/// and symlinks, all owned by root, parents created on demand.
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, 0o040_755, &[])
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.parent(path)?;
        self.entry(path, 0o100_000 | perm, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.parent(path)?;
        self.entry(path, 0o120_777, target.as_bytes())
    }

    fn parent(&mut self, path: &str) -> Result<()> {
        match path.trim_matches('/').rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        let namesize = name.len() + 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let ino = self.ino;
        self.ino += 1;
        write!(
            self.out,
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, 0
        )?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)?;
        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    fn pad(&mut self, len: usize) -> Result<()> {
        let pad = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("etc/x", 0o644, b"abc").unwrap();
        let out = cpio.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        // "etc" dir: 110 + 4 ("etc\0") = 114 → 116; then the file header.
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(out.len() % 4, 0);
    }
}
