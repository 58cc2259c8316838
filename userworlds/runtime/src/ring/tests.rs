//! Ring tests: fixed cases, a model-based property test and a hostile-peer property test.

use core::cell::Cell;
use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

fn region(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

fn cells(bytes: &mut [u8]) -> CellMemory<'_> {
    CellMemory::new(Cell::from_mut(bytes).as_slice_of_cells())
}

#[test]
fn records_go_through_in_order_and_wrap_around_the_end() {
    let mut bytes = region(DATA_OFFSET + 32);
    let memory = cells(&mut bytes);
    let mut producer = Producer::attach(memory).unwrap();
    let mut consumer = Consumer::attach(memory).unwrap();
    assert_eq!(producer.capacity(), 32);
    let mut out = [0u8; 32];
    for round in 0..50u8 {
        let record: Vec<u8> = (0..(round % 11)).map(|i| i ^ round).collect();
        producer.push(&record).unwrap();
        producer.push(b"x").unwrap();
        assert_eq!(consumer.pop(&mut out), Ok(Some(record.len())));
        assert_eq!(&out[..record.len()], &record[..]);
        assert_eq!(consumer.pop(&mut out), Ok(Some(1)));
        assert_eq!(consumer.pop(&mut out), Ok(None));
    }
}

#[test]
fn full_too_large_and_small_buffers_are_reported() {
    let mut bytes = region(DATA_OFFSET + 16);
    let memory = cells(&mut bytes);
    let mut producer = Producer::attach(memory).unwrap();
    let mut consumer = Consumer::attach(memory).unwrap();
    assert_eq!(producer.push(&[0; 13]), Err(RingError::TooLarge));
    producer.push(&[1; 12]).unwrap();
    assert_eq!(producer.free(), Ok(0));
    assert_eq!(producer.push(&[]), Err(RingError::Full));
    let mut small = [0u8; 4];
    assert_eq!(
        consumer.pop(&mut small),
        Err(RingError::BufferTooSmall { needed: 12 })
    );
    assert_eq!(consumer.peek_len(), Ok(Some(12)), "the record stays");
    let mut out = [0u8; 12];
    assert_eq!(consumer.pop(&mut out), Ok(Some(12)));
    assert_eq!(out, [1; 12]);
    assert_eq!(producer.push(&[]), Ok(()), "empty records are records");
    assert_eq!(consumer.pop(&mut small), Ok(Some(0)));
    producer.push(&[2; 7]).unwrap();
    producer.push(&[3]).unwrap();
    assert_eq!(consumer.discard(), Ok(Some(7)));
    assert_eq!(consumer.pop(&mut small), Ok(Some(1)));
    assert_eq!(small[0], 3);
    assert_eq!(consumer.discard(), Ok(None));
    assert_eq!(
        Producer::attach(NoMemory).err(),
        Some(RingError::RegionTooSmall)
    );
}

#[test]
fn regions_too_small_and_corrupt_positions_are_refused() {
    let mut tiny = region(DATA_OFFSET + 7);
    assert_eq!(
        Producer::attach(cells(&mut tiny)).err(),
        Some(RingError::RegionTooSmall)
    );
    let mut bytes = region(DATA_OFFSET + 16);
    bytes[HEAD_OFFSET..HEAD_OFFSET + 4].copy_from_slice(&32u32.to_le_bytes());
    assert_eq!(
        Producer::attach(cells(&mut bytes)).err(),
        Some(RingError::Corrupt)
    );
    let memory = cells(&mut bytes);
    let mut consumer = Consumer::attach(memory).unwrap();
    assert_eq!(
        consumer.pop(&mut [0; 16]),
        Err(RingError::Corrupt),
        "head beyond 2 x capacity"
    );
    memory.store_u32(HEAD_OFFSET, 3);
    assert_eq!(
        consumer.pop(&mut [0; 16]),
        Err(RingError::Corrupt),
        "less than a length prefix"
    );
    memory.store_u32(HEAD_OFFSET, 8);
    memory.write(DATA_OFFSET, &5u32.to_le_bytes());
    assert_eq!(
        consumer.pop(&mut [0; 16]),
        Err(RingError::Corrupt),
        "length beyond the used bytes"
    );
    reset(&memory).unwrap();
    assert_eq!(consumer.pop(&mut [0; 16]), Ok(None));
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize, u8),
    Pop(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (0usize..80, any::<u8>()).prop_map(|(len, fill)| Op::Push(len, fill)),
            (0usize..80).prop_map(Op::Pop),
        ],
        0..200,
    )
}

proptest! {
    /// The ring behaves like a queue of records bounded by `capacity` bytes of
    /// (4 + length) each.
    #[test]
    fn ring_matches_a_queue_model(capacity in MIN_CAPACITY..200usize, ops in ops()) {
        let mut bytes = region(DATA_OFFSET + capacity);
        let memory = cells(&mut bytes);
        let mut producer = Producer::attach(memory).unwrap();
        let mut consumer = Consumer::attach(memory).unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let used = |model: &VecDeque<Vec<u8>>| model.iter().map(|r| r.len() + 4).sum::<usize>();
        for op in ops {
            match op {
                Op::Push(len, fill) => {
                    let record: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                    let expected = if len + 4 > capacity {
                        Err(RingError::TooLarge)
                    } else if used(&model) + len + 4 > capacity {
                        Err(RingError::Full)
                    } else {
                        model.push_back(record.clone());
                        Ok(())
                    };
                    prop_assert_eq!(producer.push(&record), expected);
                    prop_assert_eq!(producer.free(), Ok(capacity - used(&model)));
                }
                Op::Pop(out_len) => {
                    let mut out = vec![0u8; out_len];
                    let got = consumer.pop(&mut out);
                    match model.front() {
                        None => prop_assert_eq!(got, Ok(None)),
                        Some(front) if front.len() > out_len => {
                            prop_assert_eq!(got, Err(RingError::BufferTooSmall { needed: front.len() }));
                        }
                        Some(front) => {
                            prop_assert_eq!(got, Ok(Some(front.len())));
                            prop_assert_eq!(&out[..front.len()], &front[..]);
                            model.pop_front();
                        }
                    }
                }
            }
        }
    }

    /// A hostile peer scribbling over the header and the data makes operations fail or
    /// return garbage records, but never read or write outside the region, never panic,
    /// and never return more bytes than the caller's buffer holds.
    #[test]
    fn hostile_peer_cannot_break_either_end(
        capacity in MIN_CAPACITY..120usize,
        ops in ops(),
        scribbles in proptest::collection::vec((any::<prop::sample::Index>(), any::<u32>()), 0..40),
    ) {
        let mut bytes = region(DATA_OFFSET + capacity);
        let len = bytes.len();
        let memory = cells(&mut bytes);
        let mut producer = Producer::attach(memory).unwrap();
        let mut consumer = Consumer::attach(memory).unwrap();
        let mut scribbles = scribbles.into_iter();
        for op in ops {
            if let Some((at, value)) = scribbles.next() {
                // Header words most of the time, any byte otherwise.
                match value % 4 {
                    0 => memory.store_u32(HEAD_OFFSET, value),
                    1 => memory.store_u32(TAIL_OFFSET, value),
                    2 => memory.store_u32(HEAD_OFFSET, value % (2 * capacity as u32 + 2)),
                    _ => memory.write(at.index(len), &[value as u8]),
                }
            }
            match op {
                Op::Push(n, fill) => {
                    let result = producer.push(&vec![fill; n]);
                    prop_assert!(matches!(result, Ok(()) | Err(RingError::Full | RingError::TooLarge | RingError::Corrupt)));
                }
                Op::Pop(n) => {
                    let mut out = vec![0u8; n];
                    match consumer.pop(&mut out) {
                        Ok(Some(got)) => prop_assert!(got <= n),
                        Ok(None) | Err(RingError::Corrupt) => {}
                        Err(RingError::BufferTooSmall { needed }) => prop_assert!(needed > n && needed <= capacity),
                        Err(other) => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
            }
        }
    }
}
