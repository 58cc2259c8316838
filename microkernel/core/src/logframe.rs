//! Framing of the one serial line that several log sources share.
//!
//! The kernel owns COM1. Everything that reaches the host over it — the kernel's own defmt
//! frames, later the frames of user worlds and the text of guest consoles — travels as a
//! *packet*:
//!
//! ```text
//! wire   = COBS(body) 0x00
//! body   = kind:u8  source:u8  payload:[u8]  crc:u16le
//! crc    = CRC-16/CCITT-FALSE over kind, source and payload
//! ```
//!
//! * `kind` says how to read the payload ([`Kind`]).
//! * `source` names who produced it: `0` is the kernel; other ids are announced by an
//!   [`Kind::Announce`] packet whose payload is the source's name (the host then decodes
//!   that source's defmt frames with the ELF of the same name).
//! * Bytes that do not form a valid packet (firmware or boot-loader text, a corrupted
//!   stretch on a real serial cable) are handed to the host as [`Deframed::Garbage`], so a
//!   decoder can still show them as raw text.
//!
//! This module never allocates and never panics on any input.

/// Largest body (kind + source + payload + crc) a packet may carry.
pub const MAX_BODY: usize = 1024;
/// Largest payload a packet may carry.
pub const MAX_PAYLOAD: usize = MAX_BODY - 4;
/// Largest COBS-encoded body (one overhead byte per 254 bytes, plus one).
pub const MAX_ENCODED: usize = MAX_BODY + MAX_BODY / 254 + 1;

/// The source id of the kernel itself.
pub const KERNEL_SOURCE: SourceId = 0;

/// Who produced a packet.
pub type SourceId = u8;

/// How a packet's payload is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One defmt frame (raw encoding), to be decoded with the source's ELF.
    Defmt = 1,
    /// UTF-8 text (console output, messages emitted before defmt can be used).
    Text = 2,
    /// Introduces a source: `source` is the new id, the payload its name.
    Announce = 3,
}

impl Kind {
    /// Parses the kind byte of a packet.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Defmt),
            2 => Some(Self::Text),
            3 => Some(Self::Announce),
            _ => None,
        }
    }
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff, no reflection, no final xor).
pub fn crc16(data: &[u8]) -> u16 {
    crc16_update(0xffff, data)
}

fn crc16_update(mut crc: u16, data: &[u8]) -> u16 {
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Builds one packet from pieces, then emits it COBS-encoded.
///
/// A payload longer than [`MAX_PAYLOAD`] is not sent cut in half (a truncated defmt frame
/// would decode to nonsense): the packet becomes a [`Kind::Text`] packet saying how many
/// bytes were dropped.
pub struct PacketBuilder {
    body: [u8; MAX_BODY],
    len: usize,
    dropped: usize,
}

impl Default for PacketBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuilder {
    /// An empty builder; call [`PacketBuilder::start`] before pushing payload.
    pub const fn new() -> Self {
        Self {
            body: [0; MAX_BODY],
            len: 0,
            dropped: 0,
        }
    }

    /// Starts a new packet, discarding anything not yet finished.
    pub fn start(&mut self, kind: Kind, source: SourceId) {
        self.body[0] = kind as u8;
        self.body[1] = source;
        self.len = 2;
        self.dropped = 0;
    }

    /// Appends payload bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = MAX_BODY - 2 - self.len;
        if self.dropped > 0 || bytes.len() > room {
            self.dropped += bytes.len();
            return;
        }
        self.body[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Finishes the packet and hands its wire bytes (COBS body and the 0x00 delimiter) to
    /// `emit`, one byte at a time.
    pub fn finish(&mut self, mut emit: impl FnMut(u8)) {
        if self.dropped > 0 {
            let source = self.body[1];
            let total = self.len - 2 + self.dropped;
            self.start(Kind::Text, source);
            self.push(b"<log frame dropped: ");
            let mut digits = [0u8; 20];
            self.push(format_decimal(total as u64, &mut digits));
            self.push(b" bytes, more than a packet holds>");
        }
        let crc = crc16(&self.body[..self.len]);
        self.body[self.len..self.len + 2].copy_from_slice(&crc.to_le_bytes());
        self.len += 2;
        cobs_encode(&self.body[..self.len], &mut emit);
        emit(0);
        self.len = 0;
    }
}

/// Formats `value` in decimal into `buf`, returning the digits.
fn format_decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buf[at..]
}

/// COBS-encodes `data` (which may contain zeros) so that the output contains none.
pub fn cobs_encode(data: &[u8], emit: &mut impl FnMut(u8)) {
    let mut block_start = 0;
    loop {
        // A block is up to 254 non-zero bytes, ended by a zero or by the data's end.
        let rest = &data[block_start..];
        let run = rest
            .iter()
            .take(254)
            .position(|&b| b == 0)
            .unwrap_or(rest.len().min(254));
        emit(run as u8 + 1);
        for &byte in &rest[..run] {
            emit(byte);
        }
        block_start += run;
        if block_start == data.len() {
            break;
        }
        // A short block implies the zero that ended it; a full block (code 0xff) does
        // not, so that zero starts the next block instead.
        if run < 254 && data[block_start] == 0 {
            block_start += 1; // the zero is implied by the code byte
            if block_start == data.len() {
                emit(1);
                break;
            }
        }
    }
}

/// Decodes one COBS block sequence (without the 0x00 delimiter) into `out`.
///
/// Returns the decoded length, or `None` if the input is not valid COBS or does not fit.
pub fn cobs_decode(encoded: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut read = 0;
    let mut written = 0;
    while read < encoded.len() {
        let code = encoded[read] as usize;
        if code == 0 {
            return None;
        }
        read += 1;
        let run = code - 1;
        let block = encoded.get(read..read + run)?;
        if block.contains(&0) {
            return None;
        }
        out.get_mut(written..written + run)?.copy_from_slice(block);
        written += run;
        read += run;
        if code < 0xff && read < encoded.len() {
            *out.get_mut(written)? = 0;
            written += 1;
        }
    }
    Some(written)
}

/// One packet taken off the line.
#[derive(Debug, PartialEq, Eq)]
pub enum Deframed<'a> {
    /// A well-formed packet.
    Packet {
        /// How to read `payload`.
        kind: Kind,
        /// Who sent it.
        source: SourceId,
        /// The payload bytes.
        payload: &'a [u8],
    },
    /// Bytes between two delimiters that are not a valid packet (bad COBS, bad CRC,
    /// unknown kind, too long). `bytes` holds at most [`MAX_ENCODED`] of them and
    /// `total` says how many there were.
    Garbage {
        /// The first bytes of the stretch, as received.
        bytes: &'a [u8],
        /// How many bytes the stretch had.
        total: usize,
    },
}

/// Splits a byte stream into packets. Feed it bytes with [`Deframer::push`].
pub struct Deframer {
    encoded: [u8; MAX_ENCODED],
    len: usize,
    total: usize,
    body: [u8; MAX_BODY],
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    /// A deframer at the start of a stream.
    pub const fn new() -> Self {
        Self {
            encoded: [0; MAX_ENCODED],
            len: 0,
            total: 0,
            body: [0; MAX_BODY],
        }
    }

    /// Bytes received since the last delimiter (not yet a packet).
    pub fn pending(&self) -> &[u8] {
        &self.encoded[..self.len]
    }

    /// Takes one byte off the line. Returns a packet (or garbage) when `byte` is a
    /// delimiter that ends a non-empty stretch.
    pub fn push(&mut self, byte: u8) -> Option<Deframed<'_>> {
        if byte != 0 {
            if self.len < MAX_ENCODED {
                self.encoded[self.len] = byte;
                self.len += 1;
            }
            self.total += 1;
            return None;
        }
        let (len, total) = (self.len, self.total);
        self.len = 0;
        self.total = 0;
        if total == 0 {
            return None;
        }
        if total <= MAX_ENCODED
            && let Some(body_len) = cobs_decode(&self.encoded[..len], &mut self.body)
            && body_len >= 4
        {
            let (content, crc) = self.body[..body_len].split_at(body_len - 2);
            let crc = u16::from_le_bytes([crc[0], crc[1]]);
            if crc16(content) == crc
                && let Some(kind) = Kind::from_byte(content[0])
            {
                return Some(Deframed::Packet {
                    kind,
                    source: content[1],
                    payload: &self.body[2..body_len - 2],
                });
            }
        }
        Some(Deframed::Garbage {
            bytes: &self.encoded[..len],
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wire(kind: Kind, source: SourceId, payload: &[u8]) -> Vec<u8> {
        let mut builder = PacketBuilder::new();
        builder.start(kind, source);
        builder.push(payload);
        let mut out = Vec::new();
        builder.finish(|b| out.push(b));
        out
    }

    /// A deframed stretch: `Some((kind, source))` for a packet, `None` for garbage.
    type Stretch = (Option<(Kind, SourceId)>, Vec<u8>);

    fn deframe_all(stream: &[u8]) -> Vec<Stretch> {
        let mut deframer = Deframer::new();
        let mut out = Vec::new();
        for &byte in stream {
            match deframer.push(byte) {
                Some(Deframed::Packet {
                    kind,
                    source,
                    payload,
                }) => out.push((Some((kind, source)), payload.to_vec())),
                Some(Deframed::Garbage { bytes, .. }) => out.push((None, bytes.to_vec())),
                None => {}
            }
        }
        out
    }

    #[test]
    fn crc_matches_the_published_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29b1);
    }

    #[test]
    fn encoded_packet_has_exactly_one_zero_at_the_end() {
        let bytes = wire(Kind::Defmt, 0, &[0, 0, 1, 0, 2]);
        assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(*bytes.last().unwrap(), 0);
    }

    #[test]
    fn text_between_packets_comes_out_as_garbage() {
        let mut stream = b"GRUB loading\r\n".to_vec();
        stream.push(0);
        stream.extend(wire(Kind::Text, 3, b"hello"));
        let out = deframe_all(&stream);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (None, b"GRUB loading\r\n".to_vec()));
        assert_eq!(out[1], (Some((Kind::Text, 3)), b"hello".to_vec()));
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_crc() {
        let mut bytes = wire(Kind::Defmt, 0, b"abcdef");
        bytes[3] ^= 0x10;
        let out = deframe_all(&bytes);
        assert_eq!(out.len(), 1);
        assert!(out[0].0.is_none(), "corrupted packet was accepted: {out:?}");
    }

    #[test]
    fn oversized_payload_becomes_a_text_notice() {
        let big = vec![7u8; MAX_PAYLOAD + 10];
        let out = deframe_all(&wire(Kind::Defmt, 2, &big));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Some((Kind::Text, 2)));
        let text = String::from_utf8(out[0].1.clone()).unwrap();
        assert!(
            text.contains(&format!("{} bytes", MAX_PAYLOAD + 10)),
            "{text}"
        );
    }

    #[test]
    fn payload_of_exactly_max_size_round_trips() {
        let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
        let out = deframe_all(&wire(Kind::Defmt, 1, &big));
        assert_eq!(out, vec![(Some((Kind::Defmt, 1)), big)]);
    }

    proptest! {
        #[test]
        fn packets_round_trip(packets in proptest::collection::vec(
            (1u8..=3, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..600)), 1..8)) {
            let mut stream = Vec::new();
            for (kind, source, payload) in &packets {
                stream.extend(wire(Kind::from_byte(*kind).unwrap(), *source, payload));
            }
            let out = deframe_all(&stream);
            prop_assert_eq!(out.len(), packets.len());
            for ((kind, source, payload), got) in packets.iter().zip(out) {
                prop_assert_eq!(got, (Some((Kind::from_byte(*kind).unwrap(), *source)), payload.clone()));
            }
        }

        #[test]
        fn cobs_round_trips(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut enc = Vec::new();
            cobs_encode(&data, &mut |b| enc.push(b));
            prop_assert!(!enc.contains(&0));
            let mut out = vec![0u8; data.len() + 8];
            let n = cobs_decode(&enc, &mut out);
            prop_assert_eq!(n, Some(data.len()));
            prop_assert_eq!(&out[..data.len()], &data[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let mut deframer = Deframer::new();
            for byte in stream {
                let _ = deframer.push(byte);
            }
        }
    }
}
