//! [`LogDecoder`]: bytes off the serial line in, [`LogEvent`]s out.
//!
//! The stream is split into packets by the kernel's own [`Deframer`] (the one definition of
//! the wire format). Each packet goes to its source: defmt frames are decoded with the
//! source's ELF, Text packets are reassembled into lines, Announce packets name new
//! sources. Stretches that are not packets are shown as raw text or counted as corrupt.
//!
//! Firmware text that is not followed by a zero byte runs straight into the kernel's first
//! packet; such a stretch is searched for a valid packet at its end, so the kernel's first
//! line is not lost behind a boot loader's banner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use esker_kernel_core::logframe::{Deframed, Deframer, KERNEL_SOURCE, Kind, MAX_ENCODED, SourceId};

use crate::error::Error;
use crate::event::{EventKind, LogEvent};
use crate::garbage;
use crate::source::{DefmtElf, Source};

/// File name of the kernel's ELF inside an image directory.
pub const KERNEL_ELF: &str = "esker.elf";
/// Directory (inside an image directory) holding `<name>.elf` of each announced source.
pub const WORLDS_DIR: &str = "worlds";
/// Name the kernel's events carry.
pub const KERNEL_SOURCE_NAME: &str = "kernel";

/// Longest garbage stretch kept in full (longer ones are counted, not stored).
const MAX_STRETCH: usize = 64 * 1024;

/// A packet taken off the line, owned so the deframer can move on.
struct Packet {
    kind: Kind,
    source: SourceId,
    payload: Vec<u8>,
}

/// Decodes Esker's framed serial stream.
pub struct LogDecoder {
    image_dir: PathBuf,
    deframer: Box<Deframer>,
    /// The bytes since the last delimiter, kept here in full (up to [`MAX_STRETCH`]) so a
    /// garbage stretch can be searched for a packet at its end.
    stretch: Vec<u8>,
    stretch_total: usize,
    sources: BTreeMap<SourceId, Source>,
}

impl LogDecoder {
    /// A decoder for the image in `image_dir`: loads the kernel's defmt table from
    /// `image_dir/esker.elf` now; announced sources' ELFs come from
    /// `image_dir/worlds/<name>.elf` when first needed.
    pub fn new(image_dir: &Path) -> Result<Self, Error> {
        let kernel = DefmtElf::load(&image_dir.join(KERNEL_ELF))?;
        let mut sources = BTreeMap::new();
        sources.insert(KERNEL_SOURCE, Source::loaded(KERNEL_SOURCE_NAME, kernel));
        Ok(Self {
            image_dir: image_dir.to_path_buf(),
            deframer: Box::new(Deframer::new()),
            stretch: Vec::new(),
            stretch_total: 0,
            sources,
        })
    }

    /// The image directory the ELFs come from.
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    /// Feeds bytes received from the line; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<LogEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != 0 {
                if self.stretch.len() < MAX_STRETCH {
                    self.stretch.push(byte);
                }
                self.stretch_total += 1;
            }
            let packet = match self.deframer.push(byte) {
                None => continue,
                Some(Deframed::Packet {
                    kind,
                    source,
                    payload,
                }) => Some(Packet {
                    kind,
                    source,
                    payload: payload.to_vec(),
                }),
                Some(Deframed::Garbage { .. }) => None,
            };
            let stretch = std::mem::take(&mut self.stretch);
            let total = std::mem::replace(&mut self.stretch_total, 0);
            match packet {
                Some(packet) => self.packet(packet, &mut events),
                None => self.garbage(&stretch, total, &mut events),
            }
        }
        events
    }

    /// Ends the stream: returns what is still pending (bytes after the last delimiter,
    /// unfinished Text lines) as events. The decoder can be used again afterwards.
    pub fn finish(&mut self) -> Vec<LogEvent> {
        let mut events = Vec::new();
        let stretch = std::mem::take(&mut self.stretch);
        let total = std::mem::replace(&mut self.stretch_total, 0);
        *self.deframer = Deframer::new();
        // The last packet may lack only its delimiter (QEMU stopped right before it).
        if total == stretch.len()
            && let Some((0, packet)) = packet_at_end(&stretch, 0)
        {
            self.packet(packet, &mut events);
        } else {
            self.garbage(&stretch, total, &mut events);
        }
        events.extend(self.sources.values_mut().filter_map(Source::flush_text));
        events
    }

    fn packet(&mut self, packet: Packet, events: &mut Vec<LogEvent>) {
        match packet.kind {
            Kind::Announce => self.announce(packet.source, &packet.payload, events),
            Kind::Defmt => {
                let event = self.source(packet.source).decode_defmt(&packet.payload);
                events.push(event);
            }
            Kind::Text => events.extend(self.source(packet.source).push_text(&packet.payload)),
        }
    }

    fn source(&mut self, id: SourceId) -> &mut Source {
        self.sources
            .entry(id)
            .or_insert_with(|| Source::unannounced(id))
    }

    fn announce(&mut self, id: SourceId, name: &[u8], events: &mut Vec<LogEvent>) {
        let name = String::from_utf8_lossy(name).into_owned();
        if self.sources.get(&id).is_some_and(|s| s.name() == name) {
            return;
        }
        let elf_path = is_file_name(&name)
            .then(|| self.image_dir.join(WORLDS_DIR).join(format!("{name}.elf")));
        let mut note = format!("<announced as source {id}");
        match &elf_path {
            Some(path) if !path.is_file() => {
                note.push_str(&format!("; ELF {} missing", path.display()));
            }
            Some(_) => {}
            None => note.push_str("; name is not a file name, its frames cannot be decoded"),
        }
        note.push('>');
        let source = Source::announced(&name, elf_path);
        if let Some(mut old) = self.sources.insert(id, source) {
            events.extend(old.flush_text());
        }
        events.push(LogEvent::plain(name, EventKind::Text, note));
    }

    /// Shows a stretch that was not a packet, after looking for a packet at its end.
    fn garbage(&mut self, stretch: &[u8], total: usize, events: &mut Vec<LogEvent>) {
        if total == 0 {
            return;
        }
        if total == stretch.len()
            && let Some((start, packet)) = packet_at_end(stretch, 1)
        {
            events.extend(garbage::events(&stretch[..start], start));
            self.packet(packet, events);
            return;
        }
        events.extend(garbage::events(stretch, total));
    }
}

/// Finds the longest tail of `stretch`, starting at `from` or later, that is a valid packet.
fn packet_at_end(stretch: &[u8], from: usize) -> Option<(usize, Packet)> {
    let first = stretch.len().saturating_sub(MAX_ENCODED).max(from);
    let mut deframer = Box::new(Deframer::new());
    (first..stretch.len()).find_map(|start| {
        // A delimiter first resets the deframer whatever the previous attempt left.
        let _ = deframer.push(0);
        for &byte in &stretch[start..] {
            let _ = deframer.push(byte);
        }
        match deframer.push(0) {
            Some(Deframed::Packet {
                kind,
                source,
                payload,
            }) => Some((
                start,
                Packet {
                    kind,
                    source,
                    payload: payload.to_vec(),
                },
            )),
            _ => None,
        }
    })
}

/// Whether an announced name can name `worlds/<name>.elf` without leaving that directory.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
