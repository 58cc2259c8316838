//! What the decoder hands out: one [`LogEvent`] per log line, whatever it came from.
//!
//! An event is plain owned data (no borrow of the decoder or of a defmt table), so it can be
//! sent across threads, kept in a history and compared in tests. Its [`Display`] form is
//! the one readable line every tool prints; [`LogEvent::render`] adds terminal colours.

use std::fmt;

/// Severity of a defmt log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `defmt::trace!`
    Trace,
    /// `defmt::debug!`
    Debug,
    /// `defmt::info!`
    Info,
    /// `defmt::warn!`
    Warn,
    /// `defmt::error!`
    Error,
}

impl Level {
    /// The fixed-width upper-case name printed in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Level::Trace => "\x1b[2m",
            Level::Debug => "",
            Level::Info => "\x1b[32m",
            Level::Warn => "\x1b[33m",
            Level::Error => "\x1b[1;31m",
        }
    }
}

impl From<defmt_parser::Level> for Level {
    fn from(level: defmt_parser::Level) -> Self {
        match level {
            defmt_parser::Level::Trace => Level::Trace,
            defmt_parser::Level::Debug => Level::Debug,
            defmt_parser::Level::Info => Level::Info,
            defmt_parser::Level::Warn => Level::Warn,
            defmt_parser::Level::Error => Level::Error,
        }
    }
}

/// Where an event's text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A decoded defmt frame.
    Log,
    /// A line of a source's Text packets (or an announcement of a new source).
    Text,
    /// Bytes shown as they are: readable text outside any packet (firmware, boot loader),
    /// a defmt frame that could not be decoded for lack of its ELF (as hex), or a line
    /// QEMU printed on its own stderr.
    Raw,
    /// Bytes that made no sense: a stretch of unreadable garbage or a defmt frame that its
    /// ELF's table could not decode.
    Corrupt,
}

/// One line of the decoded log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// Name of the source (`kernel`, an announced name, `#<id>` for an unannounced id,
    /// `serial` for bytes outside packets, `qemu` for QEMU's own stderr).
    pub source: String,
    /// Severity, for defmt frames.
    pub level: Option<Level>,
    /// The frame's timestamp as the source's timestamp format renders it (seconds for
    /// `{=u64:us}`).
    pub timestamp: Option<String>,
    /// The message, without a trailing newline.
    pub text: String,
    /// What produced the event.
    pub kind: EventKind,
    /// `file:line` of the log statement, when the ELF's debug info has it.
    pub location: Option<String>,
}

/// Name used for bytes that were not inside any packet.
pub const SERIAL_SOURCE_NAME: &str = "serial";
/// Name used for lines QEMU printed on its stderr.
pub const QEMU_SOURCE_NAME: &str = "qemu";

impl LogEvent {
    /// An event without level, timestamp or location.
    pub fn plain(source: impl Into<String>, kind: EventKind, text: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            level: None,
            timestamp: None,
            text: text.into(),
            kind,
            location: None,
        }
    }

    /// The readable line, with ANSI colours if `colour` is set (the caller decides, e.g.
    /// when stdout is a terminal). Equal to the [`Display`](fmt::Display) form otherwise.
    pub fn render(&self, colour: bool) -> String {
        if !colour {
            return self.to_string();
        }
        const RESET: &str = "\x1b[0m";
        const DIM: &str = "\x1b[2m";
        let level = match self.level {
            Some(level) => format!("{}{:<5}{RESET}", level.colour(), level.name()),
            None => " ".repeat(5),
        };
        let text_colour = match self.kind {
            EventKind::Log | EventKind::Text => "",
            EventKind::Raw => DIM,
            EventKind::Corrupt => "\x1b[35m",
        };
        let mut line = format!(
            "{DIM}{:>13}{RESET} {:<8} {level} {text_colour}{}{RESET}",
            self.timestamp.as_deref().unwrap_or(""),
            self.source,
            self.text
        );
        if let Some(location) = self.wanted_location() {
            line.push_str(&format!(" {DIM}({location}){RESET}"));
        }
        line
    }

    /// The location is worth printing only next to warnings and errors.
    fn wanted_location(&self) -> Option<&str> {
        match self.level {
            Some(Level::Warn | Level::Error) => self.location.as_deref(),
            _ => None,
        }
    }
}

/// `     0.012345 kernel   INFO  kernel ready (boot took 123 TSC cycles)`; warnings and
/// errors end with ` (file.rs:line)` when the location is known.
impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>13} {:<8} {:<5} {}",
            self.timestamp.as_deref().unwrap_or(""),
            self.source,
            self.level.map_or("", Level::name),
            self.text
        )?;
        if let Some(location) = self.wanted_location() {
            write!(f, " ({location})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lines_up_timestamp_source_and_level() {
        let event = LogEvent {
            source: "kernel".into(),
            level: Some(Level::Info),
            timestamp: Some("0.012345".into()),
            text: "kernel ready (boot took 123 TSC cycles)".into(),
            kind: EventKind::Log,
            location: Some("src/main.rs:10".into()),
        };
        assert_eq!(
            event.to_string(),
            "     0.012345 kernel   INFO  kernel ready (boot took 123 TSC cycles)"
        );
    }

    #[test]
    fn errors_carry_their_location() {
        let event = LogEvent {
            level: Some(Level::Error),
            location: Some("src/trap.rs:42".into()),
            ..LogEvent::plain("kernel", EventKind::Log, "EXCEPTION #UD")
        };
        assert!(
            event
                .to_string()
                .ends_with("ERROR EXCEPTION #UD (src/trap.rs:42)")
        );
        assert!(event.render(true).contains("src/trap.rs:42"));
    }

    #[test]
    fn plain_events_leave_the_columns_blank() {
        let event = LogEvent::plain("serial", EventKind::Raw, "BdsDxe: loading");
        assert_eq!(
            event.to_string(),
            format!("{:13} serial         BdsDxe: loading", "")
        );
        assert_eq!(event.render(false), event.to_string());
    }
}
