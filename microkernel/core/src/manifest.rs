//! The compiled system manifest and the bundle that carries it into the image.
//!
//! People write `system.toml`; the host tool `esker-manifest` checks it and compiles it into
//! a [`CompiledManifest`]: a flat list of kernel objects and, per world, the exact
//! capabilities to install (slot, object, rights, badge). `cargo xtask image` packs that
//! manifest and every world's ELF into a [`Bundle`], which is linked into the kernel image.
//! At boot the kernel decodes the bundle and creates exactly what it lists — nothing else.
//!
//! Encoding is postcard behind an 8-byte magic and a version word; decoding borrows names and
//! ELF bytes from the bundle (no allocation) and never panics on any input.

use esker_abi::Rights;
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Most worlds a manifest may declare.
pub const MAX_WORLDS: usize = 16;
/// Most kernel objects a manifest may declare.
pub const MAX_OBJECTS: usize = 64;
/// Most capabilities one world may be given at boot.
pub const MAX_WORLD_CAPS: usize = 32;
/// Most binaries in a bundle.
pub const MAX_BINARIES: usize = 16;

/// First bytes of every bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"ESKRBNDL";
/// Bundle format version; bump on any change to the types below.
pub const BUNDLE_VERSION: u32 = 2;

// The decoded bundle is held in a kernel static but passes through the boot stack once.
const _: () = assert!(core::mem::size_of::<Bundle<'static>>() <= 32 * 1024);

/// Scheduling parameters of a world (ESX semantics; see SEMANTICS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedParams {
    /// Relative share under contention.
    pub shares: u32,
    /// Guaranteed MHz (0 = none).
    pub reservation_mhz: u32,
    /// Ceiling in MHz (0 = unlimited).
    pub limit_mhz: u32,
    /// Allowed CPUs as a bit mask (0 = all).
    pub affinity: u64,
    /// Whether a world's threads (a VM's vCPUs) are co-scheduled, relaxed: none runs far
    /// ahead of a runnable sibling. Off, each thread is scheduled on its own.
    pub coschedule: bool,
}

impl Default for SchedParams {
    fn default() -> Self {
        Self {
            shares: 1000,
            reservation_mhz: 0,
            limit_mhz: 0,
            affinity: 0,
            coschedule: true,
        }
    }
}

/// A kernel object the manifest creates at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectSpec<'a> {
    /// The right to write to the kernel log (one per world, so revocation is per world).
    Log {
        /// The world it belongs to.
        world: &'a str,
    },
    /// A world (capabilities to it let the holder observe or stop it; none at boot yet).
    World {
        /// The world's name.
        name: &'a str,
    },
    /// A channel's endpoint.
    Endpoint {
        /// The channel's name.
        name: &'a str,
    },
    /// A notification.
    Notification {
        /// Its name.
        name: &'a str,
    },
    /// A region of RAM allocated at boot (shared rings, buffers).
    Memory {
        /// Its name.
        name: &'a str,
        /// Size in KiB (a multiple of 4).
        size_kib: u32,
    },
    /// A range of I/O ports.
    IoPorts {
        /// Device name.
        name: &'a str,
        /// First port.
        base: u16,
        /// Number of ports.
        count: u16,
    },
    /// A device MMIO region.
    Mmio {
        /// Device name.
        name: &'a str,
        /// Physical base (page-aligned).
        phys: u64,
        /// Size in bytes (page multiple).
        size: u64,
    },
    /// An interrupt line, delivered to a notification.
    Interrupt {
        /// Device name.
        name: &'a str,
        /// Legacy IRQ line (GSI).
        line: u8,
        /// Index (into [`CompiledManifest::objects`]) of the notification it signals.
        notification: u16,
        /// The notification bit it sets.
        bit: u8,
    },
    /// A virtual machine (nested page table + ASID), run by its monitor world.
    Vm {
        /// The VM's name.
        name: &'a str,
    },
    /// A virtual CPU of a VM.
    Vcpu {
        /// Its name (`<vm>-vcpu<n>`).
        name: &'a str,
        /// Index (into [`CompiledManifest::objects`]) of its VM.
        vm: u16,
    },
    /// Input typed at the host console (one world may hold it).
    Console {
        /// Its name.
        name: &'a str,
    },
    /// Read-only memory holding a file from the bundle (a VM's package: its configuration,
    /// kernel and initrd), filled at boot.
    Package {
        /// Its name.
        name: &'a str,
        /// The bundle binary whose bytes it holds.
        binary: &'a str,
    },
}

impl ObjectSpec<'_> {
    /// The object's kind.
    pub fn kind(&self) -> esker_abi::ObjectKind {
        use esker_abi::ObjectKind as K;
        match self {
            Self::Log { .. } => K::Log,
            Self::World { .. } => K::World,
            Self::Endpoint { .. } => K::Endpoint,
            Self::Notification { .. } => K::Notification,
            Self::Memory { .. } => K::Memory,
            Self::IoPorts { .. } => K::IoPorts,
            Self::Mmio { .. } => K::Mmio,
            Self::Interrupt { .. } => K::Interrupt,
            Self::Vm { .. } => K::Vm,
            Self::Vcpu { .. } => K::Vcpu,
            Self::Package { .. } => K::Memory,
            Self::Console { .. } => K::Console,
        }
    }

    /// The object's name (for a Log object, its world's name).
    pub fn name(&self) -> &str {
        match self {
            Self::Log { world: name }
            | Self::World { name }
            | Self::Endpoint { name }
            | Self::Notification { name }
            | Self::Memory { name, .. }
            | Self::IoPorts { name, .. }
            | Self::Mmio { name, .. }
            | Self::Interrupt { name, .. }
            | Self::Vm { name }
            | Self::Vcpu { name, .. }
            | Self::Package { name, .. }
            | Self::Console { name } => name,
        }
    }
}

/// One capability installed in a world at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSpec<'a> {
    /// Slot in the world's capability table.
    pub slot: u32,
    /// The name the world's runtime looks it up by (e.g. `log`, `serve:auth`, `call:auth`).
    pub name: &'a str,
    /// Index into [`CompiledManifest::objects`].
    pub object: u16,
    /// Rights.
    pub rights: Rights,
    /// Badge (0 = none); see `esker_abi::badge`.
    pub badge: u64,
}

/// One world to create at boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldSpec<'a> {
    /// Unique name; also its log source name.
    pub name: &'a str,
    /// Name of its binary in the bundle.
    pub binary: &'a str,
    /// Memory budget for its heap and stack, in KiB.
    pub memory_kib: u32,
    /// Scheduling parameters.
    pub sched: SchedParams,
    /// Whether guest-controlled input reaches this world (the audit treats it as exposed).
    pub guest_facing: bool,
    /// Threads of control sharing its address space and capabilities (1 to
    /// `esker_abi::layout::MAX_THREADS`): a VM's monitor runs one per vCPU.
    pub threads: u8,
    /// Its capabilities.
    #[serde(borrow)]
    pub caps: Vec<CapSpec<'a>, MAX_WORLD_CAPS>,
}

/// The whole system, as the kernel creates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledManifest<'a> {
    /// Every world, in creation order (index = world id, also used in badges).
    #[serde(borrow)]
    pub worlds: Vec<WorldSpec<'a>, MAX_WORLDS>,
    /// Every kernel object.
    #[serde(borrow)]
    pub objects: Vec<ObjectSpec<'a>, MAX_OBJECTS>,
}

/// A world's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary<'a> {
    /// Its name (matches [`WorldSpec::binary`]).
    pub name: &'a str,
    /// The ELF file.
    pub elf: &'a [u8],
}

/// What is linked into the kernel image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle<'a> {
    /// The manifest.
    #[serde(borrow)]
    pub manifest: CompiledManifest<'a>,
    /// The programs it names.
    #[serde(borrow)]
    pub binaries: Vec<Binary<'a>, MAX_BINARIES>,
}

/// Why a bundle could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Empty input: the image carries no bundle.
    Empty,
    /// Does not start with [`BUNDLE_MAGIC`].
    BadMagic,
    /// Written by another format version.
    Version {
        /// The version found.
        found: u32,
    },
    /// postcard could not decode (or encode) it.
    Codec,
    /// A world names a binary the bundle does not contain.
    MissingBinary,
    /// A capability names an object index out of range.
    BadObjectIndex,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("the image carries no bundle (built without `cargo xtask image`?)")
            }
            Self::BadMagic => f.write_str("bundle does not start with the ESKRBNDL magic"),
            Self::Version { found } => {
                write!(
                    f,
                    "bundle format version {found}, this kernel reads version {BUNDLE_VERSION}"
                )
            }
            Self::Codec => f.write_str("bundle is malformed (postcard decoding failed)"),
            Self::MissingBinary => f.write_str("a world names a binary that is not in the bundle"),
            Self::BadObjectIndex => f.write_str("a capability names an object that does not exist"),
            Self::BufferTooSmall => f.write_str("output buffer too small for the bundle"),
        }
    }
}

impl<'a> Bundle<'a> {
    /// Decodes and cross-checks a bundle.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.is_empty() {
            return Err(BundleError::Empty);
        }
        let rest = bytes
            .strip_prefix(&BUNDLE_MAGIC)
            .ok_or(BundleError::BadMagic)?;
        let (version, body) = rest.split_first_chunk::<4>().ok_or(BundleError::BadMagic)?;
        let found = u32::from_le_bytes(*version);
        if found != BUNDLE_VERSION {
            return Err(BundleError::Version { found });
        }
        let bundle: Bundle<'a> = postcard::from_bytes(body).map_err(|_| BundleError::Codec)?;
        bundle.check()?;
        Ok(bundle)
    }

    /// Encodes into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BundleError> {
        self.check()?;
        let header = BUNDLE_MAGIC.len() + 4;
        if out.len() < header {
            return Err(BundleError::BufferTooSmall);
        }
        out[..8].copy_from_slice(&BUNDLE_MAGIC);
        out[8..12].copy_from_slice(&BUNDLE_VERSION.to_le_bytes());
        let used = postcard::to_slice(self, &mut out[header..])
            .map_err(|_| BundleError::BufferTooSmall)?
            .len();
        Ok(header + used)
    }

    /// The ELF of a binary.
    pub fn binary(&self, name: &str) -> Option<&'a [u8]> {
        self.binaries.iter().find(|b| b.name == name).map(|b| b.elf)
    }

    fn check(&self) -> Result<(), BundleError> {
        for world in &self.manifest.worlds {
            if self.binary(world.binary).is_none() {
                return Err(BundleError::MissingBinary);
            }
            if world
                .caps
                .iter()
                .any(|c| usize::from(c.object) >= self.manifest.objects.len())
            {
                return Err(BundleError::BadObjectIndex);
            }
        }
        for object in &self.manifest.objects {
            match object {
                ObjectSpec::Vcpu { vm, .. }
                    if !matches!(
                        self.manifest.objects.get(usize::from(*vm)),
                        Some(ObjectSpec::Vm { .. })
                    ) =>
                {
                    return Err(BundleError::BadObjectIndex);
                }
                ObjectSpec::Package { binary, .. } if self.binary(binary).is_none() => {
                    return Err(BundleError::MissingBinary);
                }
                _ => {}
            }
            if let ObjectSpec::Interrupt {
                notification, bit, ..
            } = object
            {
                let target = self.manifest.objects.get(usize::from(*notification));
                if !matches!(target, Some(ObjectSpec::Notification { .. })) || *bit >= 64 {
                    return Err(BundleError::BadObjectIndex);
                }
            }
        }
        Ok(())
    }
}

/// A bundle read in place: validated once, then decoded one world, object or binary at a
/// time, so the kernel never holds the whole [`Bundle`] (tens of KiB) on its stack.
///
/// It reads the same bytes [`Bundle::encode`] writes: postcard encodes a `heapless::Vec` as
/// a varint count followed by its elements, so each section can be walked element by
/// element.
#[derive(Clone, Copy, Debug)]
pub struct BundleView<'a> {
    worlds: Section<'a>,
    objects: Section<'a>,
    binaries: Section<'a>,
}

#[derive(Clone, Copy, Debug)]
struct Section<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Section<'a> {
    /// Reads the count, then steps over `count` elements of type `T`; returns the section
    /// and the bytes after it.
    fn walk<T: Deserialize<'a>>(
        bytes: &'a [u8],
        limit: usize,
    ) -> Result<(Self, &'a [u8]), BundleError> {
        let (count, start) =
            postcard::take_from_bytes::<usize>(bytes).map_err(|_| BundleError::Codec)?;
        if count > limit {
            return Err(BundleError::Codec);
        }
        let mut rest = start;
        for _ in 0..count {
            let (_, after) =
                postcard::take_from_bytes::<T>(rest).map_err(|_| BundleError::Codec)?;
            rest = after;
        }
        let used = start.len() - rest.len();
        Ok((
            Self {
                count,
                bytes: &start[..used],
            },
            rest,
        ))
    }

    fn iter<T: Deserialize<'a>>(self) -> impl Iterator<Item = T> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map_while(move |_| {
            let (item, after) = postcard::take_from_bytes::<T>(rest).ok()?;
            rest = after;
            Some(item)
        })
    }
}

impl<'a> BundleView<'a> {
    /// Checks the header and every element, and cross-checks names and indices.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.is_empty() {
            return Err(BundleError::Empty);
        }
        let rest = bytes
            .strip_prefix(&BUNDLE_MAGIC)
            .ok_or(BundleError::BadMagic)?;
        let (version, body) = rest.split_first_chunk::<4>().ok_or(BundleError::BadMagic)?;
        let found = u32::from_le_bytes(*version);
        if found != BUNDLE_VERSION {
            return Err(BundleError::Version { found });
        }
        let (worlds, rest) = Section::walk::<WorldSpec<'a>>(body, MAX_WORLDS)?;
        let (objects, rest) = Section::walk::<ObjectSpec<'a>>(rest, MAX_OBJECTS)?;
        let (binaries, _) = Section::walk::<Binary<'a>>(rest, MAX_BINARIES)?;
        let view = Self {
            worlds,
            objects,
            binaries,
        };
        for world in view.worlds() {
            if view.binary(world.binary).is_none() {
                return Err(BundleError::MissingBinary);
            }
            if world
                .caps
                .iter()
                .any(|c| usize::from(c.object) >= view.objects.count)
            {
                return Err(BundleError::BadObjectIndex);
            }
        }
        for object in view.objects() {
            match object {
                ObjectSpec::Vcpu { vm, .. }
                    if !matches!(
                        view.objects().nth(usize::from(vm)),
                        Some(ObjectSpec::Vm { .. })
                    ) =>
                {
                    return Err(BundleError::BadObjectIndex);
                }
                ObjectSpec::Package { binary, .. } if view.binary(binary).is_none() => {
                    return Err(BundleError::MissingBinary);
                }
                _ => {}
            }
            if let ObjectSpec::Interrupt {
                notification, bit, ..
            } = object
            {
                let target = view.objects().nth(usize::from(notification));
                if !matches!(target, Some(ObjectSpec::Notification { .. })) || bit >= 64 {
                    return Err(BundleError::BadObjectIndex);
                }
            }
        }
        Ok(view)
    }

    /// The worlds, in manifest order.
    pub fn worlds(&self) -> impl Iterator<Item = WorldSpec<'a>> + 'a {
        self.worlds.iter()
    }

    /// The objects, in manifest order.
    pub fn objects(&self) -> impl Iterator<Item = ObjectSpec<'a>> + 'a {
        self.objects.iter()
    }

    /// Number of objects.
    pub fn object_count(&self) -> usize {
        self.objects.count
    }

    /// The ELF of a binary.
    pub fn binary(&self, name: &str) -> Option<&'a [u8]> {
        self.binaries
            .iter::<Binary<'a>>()
            .find(|b| b.name == name)
            .map(|b| b.elf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Bundle<'static> {
        let mut caps = Vec::new();
        caps.push(CapSpec {
            slot: 0,
            name: "log",
            object: 0,
            rights: Rights::LOG,
            badge: 0,
        })
        .unwrap();
        caps.push(CapSpec {
            slot: 1,
            name: "serve:auth",
            object: 1,
            rights: Rights::RECEIVE,
            badge: 0,
        })
        .unwrap();
        let mut worlds = Vec::new();
        worlds
            .push(WorldSpec {
                name: "vmkauthd",
                binary: "vmkauthd",
                memory_kib: 512,
                sched: SchedParams::default(),
                guest_facing: false,
                threads: 1,
                caps,
            })
            .unwrap();
        let mut objects = Vec::new();
        objects.push(ObjectSpec::Log { world: "vmkauthd" }).unwrap();
        objects.push(ObjectSpec::Endpoint { name: "auth" }).unwrap();
        let mut binaries = Vec::new();
        binaries
            .push(Binary {
                name: "vmkauthd",
                elf: b"\x7fELF fake",
            })
            .unwrap();
        Bundle {
            manifest: CompiledManifest { worlds, objects },
            binaries,
        }
    }

    #[test]
    fn bundle_round_trips() {
        let bundle = sample();
        let mut buf = [0u8; 4096];
        let n = bundle.encode(&mut buf).unwrap();
        let back = Bundle::decode(&buf[..n]).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.binary("vmkauthd"), Some(&b"\x7fELF fake"[..]));
    }

    #[test]
    fn the_view_reads_what_encode_wrote() {
        let bundle = sample();
        let mut buf = [0u8; 4096];
        let n = bundle.encode(&mut buf).unwrap();
        let view = BundleView::parse(&buf[..n]).unwrap();
        assert_eq!(
            view.worlds().collect::<std::vec::Vec<_>>(),
            bundle.manifest.worlds.to_vec()
        );
        assert_eq!(
            view.objects().collect::<std::vec::Vec<_>>(),
            bundle.manifest.objects.to_vec()
        );
        assert_eq!(view.binary("vmkauthd"), Some(&b"\x7fELF fake"[..]));
        assert_eq!(view.binary("nope"), None);
        for cut in 0..n {
            assert!(
                BundleView::parse(&buf[..cut]).is_err(),
                "a bundle cut at {cut} bytes was accepted"
            );
        }
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(Bundle::decode(&[]), Err(BundleError::Empty));
        assert_eq!(Bundle::decode(b"NOTABUNDLE..."), Err(BundleError::BadMagic));
        let mut bytes = BUNDLE_MAGIC.to_vec();
        bytes.extend(99u32.to_le_bytes());
        assert_eq!(
            Bundle::decode(&bytes),
            Err(BundleError::Version { found: 99 })
        );
    }

    #[test]
    fn a_world_without_its_binary_is_refused() {
        let mut bundle = sample();
        bundle.binaries.clear();
        let mut buf = [0u8; 4096];
        assert_eq!(bundle.encode(&mut buf), Err(BundleError::MissingBinary));
    }

    #[test]
    fn a_cap_naming_a_missing_object_is_refused() {
        let mut bundle = sample();
        bundle.manifest.worlds[0].caps[1].object = 9;
        let mut buf = [0u8; 4096];
        assert_eq!(bundle.encode(&mut buf), Err(BundleError::BadObjectIndex));
    }

    proptest! {
        #[test]
        fn corrupted_bundles_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..16)) {
            let bundle = sample();
            let mut buf = [0u8; 4096];
            let n = bundle.encode(&mut buf).unwrap();
            for (at, byte) in flips {
                buf[at % n] ^= byte;
            }
            let _ = Bundle::decode(&buf[..n]);
            if let Ok(view) = BundleView::parse(&buf[..n]) {
                let _ = (view.worlds().count(), view.objects().count(), view.binary("vmkauthd"));
            }
        }
    }
}
