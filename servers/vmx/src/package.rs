//! A VM package: the files a monitor needs to power a VM on — its configuration file and
//! the files it names (kernel, initrd) — in one blob, handed to the vmx world as a
//! read-only Memory capability. The host tool writes it (`cargo xtask run --vm`); the
//! monitor reads it and trusts nothing in it.
//!
//! Layout (little-endian): the magic `ESKVMPKG`, a `u32` format version, a `u32` file
//! count, then per file a `u16` name length, the name (UTF-8), a `u64` offset from the
//! start of the package and a `u64` length; the file bytes follow.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// First bytes of every package.
pub const MAGIC: [u8; 8] = *b"ESKVMPKG";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// The name the configuration file is stored under.
pub const CONFIG: &str = "config";
/// Most files in a package.
pub const MAX_FILES: usize = 16;

/// Why a package cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// It does not start with [`MAGIC`].
    BadMagic,
    /// Another format version.
    Version(u32),
    /// It ends inside its header.
    Truncated,
    /// More than [`MAX_FILES`] files.
    TooManyFiles(u32),
    /// A file name is not UTF-8.
    BadName,
    /// A file lies (partly) outside the package.
    OutOfBounds {
        /// The file.
        name: String,
    },
    /// No file of that name.
    Missing {
        /// The name asked for.
        name: String,
    },
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a VM package (no ESKVMPKG magic)"),
            Self::Version(v) => write!(f, "VM package format {v}, this monitor reads {VERSION}"),
            Self::Truncated => f.write_str("the VM package ends inside its header"),
            Self::TooManyFiles(n) => {
                write!(f, "the VM package lists {n} files, at most {MAX_FILES}")
            }
            Self::BadName => f.write_str("a file name in the VM package is not UTF-8"),
            Self::OutOfBounds { name } => {
                write!(f, "file \"{name}\" lies outside the VM package")
            }
            Self::Missing { name } => write!(f, "the VM package has no file \"{name}\""),
        }
    }
}

/// A package read in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package<'a> {
    files: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Package<'a> {
    /// Reads and checks a package.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PackageError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(8)? != MAGIC {
            return Err(PackageError::BadMagic);
        }
        let version = reader.u32()?;
        if version != VERSION {
            return Err(PackageError::Version(version));
        }
        let count = reader.u32()?;
        if count as usize > MAX_FILES {
            return Err(PackageError::TooManyFiles(count));
        }
        let mut files = Vec::new();
        for _ in 0..count {
            let length = usize::from(reader.u16()?);
            let name =
                core::str::from_utf8(reader.take(length)?).map_err(|_| PackageError::BadName)?;
            let (offset, size) = (reader.u64()?, reader.u64()?);
            let data = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(offset, size)| bytes.get(offset..offset.checked_add(size)?))
                .ok_or_else(|| PackageError::OutOfBounds { name: name.into() })?;
            files.push((name, data));
        }
        Ok(Self { files })
    }

    /// The file called `name`.
    pub fn file(&self, name: &str) -> Result<&'a [u8], PackageError> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, data)| *data)
            .ok_or_else(|| PackageError::Missing { name: name.into() })
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.files.iter().map(|(name, _)| *name)
    }
}

/// Writes a package of `files` (`(name, bytes)`).
pub fn encode(files: &[(&str, &[u8])]) -> Vec<u8> {
    let header: usize = 16 + files.iter().map(|(n, _)| 2 + n.len() + 16).sum::<usize>();
    let mut out = Vec::with_capacity(header + files.iter().map(|(_, d)| d.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    let mut offset = header as u64;
    for (name, data) in files {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        offset += data.len() as u64;
    }
    for (_, data) in files {
        out.extend_from_slice(data);
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackageError> {
        let end = self.at.checked_add(n).ok_or(PackageError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(PackageError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, PackageError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, PackageError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, PackageError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_finds_files() {
        let bytes = encode(&[("config", b"name = \"a\"\n"), ("vmlinuz", &[1, 2, 3])]);
        let package = Package::parse(&bytes).unwrap();
        assert_eq!(package.file("config").unwrap(), b"name = \"a\"\n");
        assert_eq!(package.file("vmlinuz").unwrap(), &[1, 2, 3]);
        assert_eq!(
            package.file("initrd").unwrap_err().to_string(),
            "the VM package has no file \"initrd\""
        );
        assert_eq!(package.names().collect::<Vec<_>>(), ["config", "vmlinuz"]);
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(Package::parse(b"nope"), Err(PackageError::Truncated));
        assert_eq!(
            Package::parse(b"NOTAPKG!\x01\0\0\0\0\0\0\0"),
            Err(PackageError::BadMagic)
        );
        let mut bytes = encode(&[("kernel", &[0; 16])]);
        let len = bytes.len();
        bytes.truncate(len - 1);
        assert_eq!(
            Package::parse(&bytes),
            Err(PackageError::OutOfBounds {
                name: "kernel".into()
            })
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_mutated_packages(
            flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..8),
            cut in 0usize..80,
        ) {
            let mut bytes = encode(&[("config", b"x"), ("k", &[7; 20])]);
            for (at, value) in flips {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = value;
                }
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = Package::parse(&bytes);
        }
    }
}
