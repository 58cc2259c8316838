//! Bytes that are not a packet: firmware and boot-loader text printed on COM1 before the
//! kernel owns it, or a stretch damaged on the way.
//!
//! A stretch that is mostly readable (after removing terminal escape sequences) becomes
//! one [`EventKind::Raw`] event per line; anything else becomes a single
//! `<N corrupt bytes>` [`EventKind::Corrupt`] event. Never panics, whatever the bytes.

use crate::event::{EventKind, LogEvent, SERIAL_SOURCE_NAME};

/// Share of readable characters above which a stretch is shown as text.
const READABLE_PERCENT: usize = 90;

/// Turns one garbage stretch into events. `total` is the stretch's length on the wire,
/// which may exceed `bytes.len()` when only its start was kept.
pub(crate) fn events(bytes: &[u8], total: usize) -> Vec<LogEvent> {
    if total == 0 {
        return Vec::new();
    }
    let text = strip_escapes(bytes);
    let text = String::from_utf8_lossy(&text);
    let readable = text
        .chars()
        .filter(|&c| (!c.is_control() && c != char::REPLACEMENT_CHARACTER) || "\t\r\n".contains(c))
        .count();
    let chars = text.chars().count();
    if chars == 0 || readable * 100 < chars * READABLE_PERCENT {
        return vec![corrupt(total)];
    }
    let mut events: Vec<LogEvent> = text
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let shown: String = line
                .chars()
                .map(|c| if c.is_control() && c != '\t' { '.' } else { c })
                .collect();
            LogEvent::plain(SERIAL_SOURCE_NAME, EventKind::Raw, shown)
        })
        .collect();
    if total > bytes.len() {
        events.push(LogEvent::plain(
            SERIAL_SOURCE_NAME,
            EventKind::Raw,
            format!("<{} more bytes not shown>", total - bytes.len()),
        ));
    }
    events
}

/// The event for a stretch that is not worth showing.
pub(crate) fn corrupt(total: usize) -> LogEvent {
    LogEvent::plain(
        SERIAL_SOURCE_NAME,
        EventKind::Corrupt,
        format!("<{total} corrupt bytes>"),
    )
}

/// Removes ANSI/VT100 escape sequences (`ESC [ ... final`, `ESC x`), which firmware uses to
/// clear the screen and set colours.
fn strip_escapes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0x1b {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        i += 1;
        match bytes.get(i) {
            Some(b'[') => {
                i += 1;
                // Parameter and intermediate bytes, then one final byte.
                while i < bytes.len() && (0x20..0x40).contains(&bytes[i]) {
                    i += 1;
                }
                i += 1;
            }
            // Character-set selection takes one more byte.
            Some(b'(' | b')') => i += 2,
            Some(_) => i += 1,
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &[LogEvent]) -> Vec<&str> {
        events.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn firmware_text_becomes_lines_without_escapes() {
        let stretch = b"\x1b[2J\x1b[01;01HBdsDxe: loading\r\n\r\nGRUB\r\n";
        let events = events(stretch, stretch.len());
        assert_eq!(texts(&events), ["BdsDxe: loading", "GRUB"]);
        assert!(events.iter().all(|e| e.kind == EventKind::Raw));
    }

    #[test]
    fn binary_junk_is_counted_not_shown() {
        let junk: Vec<u8> = (1..=60).map(|i| (i * 37 % 31) as u8).collect();
        let events = events(&junk, junk.len());
        assert_eq!(texts(&events), ["<60 corrupt bytes>"]);
        assert_eq!(events[0].kind, EventKind::Corrupt);
    }

    #[test]
    fn a_truncated_stretch_says_how_much_is_missing() {
        let events = events(b"hello", 105);
        assert_eq!(texts(&events), ["hello", "<100 more bytes not shown>"]);
    }

    #[test]
    fn escape_at_the_very_end_is_harmless() {
        assert_eq!(strip_escapes(b"ab\x1b"), b"ab");
        assert_eq!(strip_escapes(b"ab\x1b["), b"ab");
        assert_eq!(strip_escapes(b"a\x1b(Bb"), b"ab");
    }
}
