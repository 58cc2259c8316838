//! One log source on the serial line: its name, the defmt table of its ELF, and the
//! partial line of its Text packets.
//!
//! The kernel's ELF is loaded when the decoder is created; an announced source's ELF
//! (`worlds/<name>.elf`) is loaded the first time one of its defmt frames arrives. A source
//! whose ELF is missing still produces events: its frames are shown as hex together with
//! the reason. Nothing here panics on what the serial line carries.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use defmt_decoder::{DecodeError, Locations, Table};

use crate::error::Error;
use crate::event::{EventKind, Level, LogEvent};

/// A Text packet stream without a newline is cut into lines of at most this many bytes.
const MAX_TEXT_LINE: usize = 4096;

/// A source's defmt table and the `file:line` of each log statement.
pub(crate) struct DefmtElf {
    table: Table,
    locations: BTreeMap<u64, String>,
}

impl DefmtElf {
    /// Reads `path` and parses its defmt table (and, if the ELF has line info, the
    /// locations of its log statements).
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table = Table::parse(&bytes)
            .map_err(|err| Error::BadElf {
                path: path.to_path_buf(),
                message: format!("{err:#}"),
            })?
            .ok_or_else(|| Error::NoDefmtTable {
                path: path.to_path_buf(),
            })?;
        // Locations are a convenience: an ELF without usable DWARF still decodes.
        let locations = table
            .get_locations(&bytes)
            .map(|locations: Locations| {
                locations
                    .into_iter()
                    .map(|(index, location)| {
                        (
                            index,
                            format!("{}:{}", location.file.display(), location.line),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { table, locations })
    }

    /// Decodes one raw-encoded defmt frame from `source`.
    ///
    /// defmt-decoder trusts its input in a few places (it may panic on a frame that does
    /// not match its format string); such a panic is caught and reported as corrupt.
    pub(crate) fn decode(&self, source: &str, frame: &[u8]) -> LogEvent {
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| self.try_decode(source, frame)));
        let reason = match decoded {
            Ok(Ok(event)) => return event,
            Ok(Err(err)) => format!("{err:?}"),
            Err(_) => "the decoder panicked".to_string(),
        };
        LogEvent::plain(
            source,
            EventKind::Corrupt,
            format!(
                "<undecodable defmt frame ({reason}), {} bytes: {}>",
                frame.len(),
                hex(frame)
            ),
        )
    }

    fn try_decode(&self, source: &str, frame: &[u8]) -> Result<LogEvent, DecodeError> {
        let (decoded, consumed) = self.table.decode(frame)?;
        let mut text = decoded.display_message().to_string();
        if consumed < frame.len() {
            text.push_str(&format!(
                " <{} trailing bytes not decoded: {}>",
                frame.len() - consumed,
                hex(&frame[consumed..])
            ));
        }
        Ok(LogEvent {
            source: source.to_string(),
            level: decoded.level().map(Level::from),
            timestamp: decoded.display_timestamp().map(|t| t.to_string()),
            text,
            kind: EventKind::Log,
            location: self.locations.get(&decoded.index()).cloned(),
        })
    }
}

/// Whether a source's ELF has been looked at, and what came of it.
enum Elf {
    NotLoaded(PathBuf),
    Loaded(Box<DefmtElf>),
    Unusable(String),
}

/// A producer of packets on the line.
pub(crate) struct Source {
    name: String,
    elf: Elf,
    text: Vec<u8>,
}

impl Source {
    /// The kernel, with its table already loaded.
    pub(crate) fn loaded(name: &str, elf: DefmtElf) -> Self {
        Self {
            name: name.to_string(),
            elf: Elf::Loaded(Box::new(elf)),
            text: Vec::new(),
        }
    }

    /// An announced source whose ELF is loaded on first use from `elf_path`, or `None`
    /// when the name cannot be a file name (the reason is kept for its events).
    pub(crate) fn announced(name: &str, elf_path: Option<PathBuf>) -> Self {
        let elf = match elf_path {
            Some(path) => Elf::NotLoaded(path),
            None => Elf::Unusable(format!("source name {name:?} is not a valid file name")),
        };
        Self {
            name: name.to_string(),
            elf,
            text: Vec::new(),
        }
    }

    /// A source id that was never announced: its frames cannot be decoded.
    pub(crate) fn unannounced(id: u8) -> Self {
        Self {
            name: format!("#{id}"),
            elf: Elf::Unusable(format!("source {id} was never announced")),
            text: Vec::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Decodes one defmt frame, loading the ELF first if this is the source's first frame.
    pub(crate) fn decode_defmt(&mut self, frame: &[u8]) -> LogEvent {
        if let Elf::NotLoaded(path) = &self.elf {
            self.elf = match DefmtElf::load(path) {
                Ok(elf) => Elf::Loaded(Box::new(elf)),
                Err(err) => Elf::Unusable(err.to_string()),
            };
        }
        match &self.elf {
            Elf::Loaded(elf) => elf.decode(&self.name, frame),
            Elf::Unusable(reason) => LogEvent::plain(
                &self.name,
                EventKind::Raw,
                format!("<defmt frame not decoded ({reason}): {}>", hex(frame)),
            ),
            Elf::NotLoaded(_) => unreachable!("the ELF was loaded just above"),
        }
    }

    /// Adds Text packet bytes; returns the lines they complete.
    pub(crate) fn push_text(&mut self, bytes: &[u8]) -> Vec<LogEvent> {
        self.text.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.text.drain(..=newline).collect();
            events.push(self.text_event(&line[..newline]));
        }
        while self.text.len() >= MAX_TEXT_LINE {
            let line: Vec<u8> = self.text.drain(..MAX_TEXT_LINE).collect();
            events.push(self.text_event(&line));
        }
        events
    }

    /// The unfinished line, if any, as an event.
    pub(crate) fn flush_text(&mut self) -> Option<LogEvent> {
        if self.text.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.text);
        Some(self.text_event(&line))
    }

    fn text_event(&self, line: &[u8]) -> LogEvent {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        LogEvent::plain(
            &self.name,
            EventKind::Text,
            String::from_utf8_lossy(line).into_owned(),
        )
    }
}

/// `01 a2 ff`: bytes as space-separated hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}
