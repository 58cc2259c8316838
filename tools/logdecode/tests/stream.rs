//! The decoder against synthetic streams: real defmt tables (from synthetic ELFs parsed by
//! defmt-decoder) and packets built with the kernel's own `PacketBuilder`.

mod support;

use esker_kernel_core::logframe::{KERNEL_SOURCE, Kind};
use esker_logdecode::{Error, EventKind, Level, LogDecoder, LogEvent};
use proptest::prelude::*;
use support::{TIMESTAMP, defmt_elf, frame, packet};

const READY: u16 = 1;
const EXCEPTION: u16 = 2;
const GREETING: u16 = 3;

fn kernel_image() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let elf = defmt_elf(
        Some(TIMESTAMP),
        &[
            ("defmt_info", "kernel ready (boot took {=u64} TSC cycles)"),
            (
                "defmt_error",
                "EXCEPTION #PF (vector {=u8}) error code {=u64:#x} cr2 {=u64:#x}",
            ),
            ("defmt_warn", "hello from {=str}"),
        ],
    );
    support::write(dir.path(), "esker.elf", &elf);
    dir
}

fn decode_all(decoder: &mut LogDecoder, stream: &[u8]) -> Vec<LogEvent> {
    let mut events = decoder.push(stream);
    events.extend(decoder.finish());
    events
}

fn ready_packet(ts: u64, cycles: u64) -> Vec<u8> {
    packet(
        Kind::Defmt,
        KERNEL_SOURCE,
        &frame(READY, Some(ts), &cycles.to_le_bytes()),
    )
}

#[test]
fn decodes_a_kernel_defmt_frame_into_one_readable_line() {
    let image = kernel_image();
    let mut decoder = LogDecoder::new(image.path()).unwrap();
    let events = decode_all(&mut decoder, &ready_packet(12_345, 123));
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.kind, EventKind::Log);
    assert_eq!(event.level, Some(Level::Info));
    assert_eq!(event.source, "kernel");
    assert_eq!(event.timestamp.as_deref(), Some("0.012345"));
    assert_eq!(
        event.to_string(),
        "     0.012345 kernel   INFO  kernel ready (boot took 123 TSC cycles)"
    );
}

#[test]
fn decodes_hex_arguments_and_levels() {
    let image = kernel_image();
    let mut decoder = LogDecoder::new(image.path()).unwrap();
    let mut args = vec![14u8];
    args.extend(2u64.to_le_bytes());
    args.extend(0x7fff_dead_b000u64.to_le_bytes());
    let events = decode_all(
        &mut decoder,
        &packet(
            Kind::Defmt,
            KERNEL_SOURCE,
            &frame(EXCEPTION, Some(1), &args),
        ),
    );
    assert_eq!(events[0].level, Some(Level::Error));
    assert_eq!(
        events[0].text,
        "EXCEPTION #PF (vector 14) error code 0x2 cr2 0x7fffdeadb000"
    );
}

#[test]
fn string_arguments_are_decoded() {
    let image = kernel_image();
    let mut args = 5u32.to_le_bytes().to_vec();
    args.extend(b"pvh.s");
    let events = decode_all(
        &mut LogDecoder::new(image.path()).unwrap(),
        &packet(Kind::Defmt, KERNEL_SOURCE, &frame(GREETING, Some(0), &args)),
    );
    assert_eq!(events[0].level, Some(Level::Warn));
    assert_eq!(events[0].text, "hello from pvh.s");
}

#[test]
fn a_mixed_stream_shows_every_part() {
    let image = kernel_image();
    let mut decoder = LogDecoder::new(image.path()).unwrap();
    let mut stream = b"SeaBIOS (version 1.16)\r\nBooting from ROM..\r\n\0".to_vec();
    stream.extend(ready_packet(1_000_000, 7));
    let mut corrupted = ready_packet(2, 8);
    corrupted[4] ^= 0x40;
    stream.extend(&corrupted);
    stream.extend(packet(Kind::Text, KERNEL_SOURCE, b"con"));
    stream.extend(packet(Kind::Text, KERNEL_SOURCE, b"sole line\r\nsecond"));
    stream.extend(packet(Kind::Announce, 3, b"netsrv"));
    stream.extend(packet(Kind::Defmt, 3, &[1, 0, 42]));
    stream.extend(packet(Kind::Text, 3, b"world text\n"));
    stream.extend(packet(Kind::Text, KERNEL_SOURCE, b" half"));

    let events = decode_all(&mut decoder, &stream);
    let shown: Vec<(EventKind, &str, &str)> = events
        .iter()
        .map(|e| (e.kind, e.source.as_str(), e.text.as_str()))
        .collect();
    assert_eq!(
        shown[0],
        (EventKind::Raw, "serial", "SeaBIOS (version 1.16)")
    );
    assert_eq!(shown[1], (EventKind::Raw, "serial", "Booting from ROM.."));
    assert_eq!(
        shown[2],
        (
            EventKind::Log,
            "kernel",
            "kernel ready (boot took 7 TSC cycles)"
        )
    );
    assert_eq!(events[2].timestamp.as_deref(), Some("1.000000"));
    assert_eq!(shown[3].0, EventKind::Corrupt);
    assert!(shown[3].2.ends_with("corrupt bytes>"), "{:?}", shown[3]);
    assert_eq!(shown[4], (EventKind::Text, "kernel", "console line"));
    assert_eq!(shown[5].0, EventKind::Text);
    assert_eq!(shown[5].1, "netsrv");
    assert!(
        shown[5].2.contains("announced as source 3"),
        "{:?}",
        shown[5]
    );
    assert!(
        shown[5].2.contains("worlds/netsrv.elf missing"),
        "{:?}",
        shown[5]
    );
    assert_eq!(shown[6].0, EventKind::Raw);
    assert_eq!(shown[6].1, "netsrv");
    assert!(shown[6].2.contains("01 00 2a"), "{:?}", shown[6]);
    assert!(shown[6].2.contains("netsrv.elf"), "{:?}", shown[6]);
    assert_eq!(shown[7], (EventKind::Text, "netsrv", "world text"));
    // finish() flushes the kernel's unfinished line.
    assert_eq!(shown[8], (EventKind::Text, "kernel", "second half"));
    assert_eq!(shown.len(), 9, "{shown:#?}");
}

#[test]
fn byte_at_a_time_gives_the_same_events_as_one_chunk() {
    let image = kernel_image();
    let mut stream = b"noise\0".to_vec();
    for i in 0..20 {
        stream.extend(ready_packet(i, i * 3));
        stream.extend(packet(Kind::Text, KERNEL_SOURCE, b"a\nb"));
    }
    let whole = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    let mut decoder = LogDecoder::new(image.path()).unwrap();
    let mut bytewise = Vec::new();
    for byte in &stream {
        bytewise.extend(decoder.push(std::slice::from_ref(byte)));
    }
    bytewise.extend(decoder.finish());
    assert_eq!(whole, bytewise);
    assert_eq!(whole.len(), 1 + 20 * 2 + 1);
}

#[test]
fn firmware_text_without_a_delimiter_does_not_hide_the_first_packet() {
    let image = kernel_image();
    let mut stream =
        b"\x1b[2J\x1b[01;01HBdsDxe: starting Boot0001 \"UEFI QEMU DVD-ROM\"\r\n".to_vec();
    stream.extend(ready_packet(5, 9));
    let events = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "BdsDxe: starting Boot0001 \"UEFI QEMU DVD-ROM\"",
            "kernel ready (boot took 9 TSC cycles)"
        ]
    );
}

#[test]
fn a_packet_cut_off_before_its_delimiter_is_decoded_at_finish() {
    let image = kernel_image();
    let mut stream = ready_packet(5, 10);
    stream.pop();
    let events = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].text, "kernel ready (boot took 10 TSC cycles)");
}

#[test]
fn binary_garbage_is_counted() {
    let image = kernel_image();
    let junk: Vec<u8> = (0..50u8).map(|i| i.wrapping_mul(77) | 0x80).collect();
    let mut stream = junk.clone();
    stream.push(0);
    let events = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Corrupt);
    assert_eq!(events[0].text, "<50 corrupt bytes>");
}

#[test]
fn an_announced_source_with_an_elf_is_decoded_with_its_own_table() {
    let image = kernel_image();
    let world = defmt_elf(None, &[("defmt_debug", "net up: {=u8} queues")]);
    support::write(image.path(), "worlds/netsrv.elf", &world);
    let mut stream = packet(Kind::Announce, 5, b"netsrv");
    stream.extend(packet(Kind::Defmt, 5, &frame(1, None, &[4])));
    let events = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    assert!(!events[0].text.contains("missing"), "{:?}", events[0]);
    assert_eq!(events[1].source, "netsrv");
    assert_eq!(events[1].level, Some(Level::Debug));
    assert_eq!(events[1].timestamp, None);
    assert_eq!(events[1].text, "net up: 4 queues");
}

#[test]
fn frames_of_unannounced_sources_and_unknown_indices_are_still_shown() {
    let image = kernel_image();
    let mut stream = packet(Kind::Defmt, 9, &[1, 0]);
    stream.extend(packet(
        Kind::Defmt,
        KERNEL_SOURCE,
        &frame(999, Some(0), &[]),
    ));
    stream.extend(packet(Kind::Announce, 4, b"../../etc/passwd"));
    stream.extend(packet(Kind::Defmt, 4, &[1, 0]));
    let events = decode_all(&mut LogDecoder::new(image.path()).unwrap(), &stream);
    assert_eq!(events[0].source, "#9");
    assert_eq!(events[0].kind, EventKind::Raw);
    assert!(
        events[0].text.contains("never announced"),
        "{:?}",
        events[0]
    );
    assert_eq!(events[1].kind, EventKind::Corrupt);
    assert!(events[1].text.contains("undecodable"), "{:?}", events[1]);
    assert!(
        events[2].text.contains("not a file name"),
        "{:?}",
        events[2]
    );
    assert_eq!(events[3].kind, EventKind::Raw);
}

#[test]
fn a_missing_or_defmt_less_kernel_elf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = LogDecoder::new(dir.path()).err().expect("no ELF must fail");
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().contains("esker.elf"), "{err}");

    let mut obj = object::write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    obj.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
    support::write(dir.path(), "esker.elf", &obj.write().unwrap());
    let err = LogDecoder::new(dir.path())
        .err()
        .expect("no table must fail");
    assert!(matches!(err, Error::NoDefmtTable { .. }), "{err}");
    assert!(err.to_string().contains("no defmt table"), "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_and_frames_never_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..600),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
    ) {
        let image = kernel_image();
        let mut decoder = LogDecoder::new(image.path()).unwrap();
        let mut stream = noise;
        for payload in &frames {
            stream.extend(packet(Kind::Defmt, KERNEL_SOURCE, payload));
            stream.extend(packet(Kind::Text, 1, payload));
        }
        let events = decode_all(&mut decoder, &stream);
        prop_assert!(events.len() >= frames.len());
    }
}
