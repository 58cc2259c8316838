//! Reading one `[devices.<name>]` table: its holders and the hardware it covers.
//!
//! `ioports` and `mmio` take one table or an array of tables. No two devices (nor two
//! ranges of one device) may claim the same port, MMIO byte or interrupt line. How many
//! worlds hold a device is deliberately *not* checked here: the audit's
//! `exclusive-device` rule does that, naming every holder.

use super::Context;
use crate::model::{Device, IoPortRange, MmioRange};
use crate::toml_read::{DeValue, Fields, Located, Spanned};

const KEYS: [&str; 4] = ["holders", "ioports", "mmio", "interrupt"];

/// Highest legacy interrupt line (I/O APIC input) a device may name.
pub const MAX_INTERRUPT_LINE: u64 = 23;

/// Page size MMIO regions are aligned to.
const PAGE: u64 = 4096;

/// Hardware already claimed by earlier devices: `(first, last, device)`.
#[derive(Default)]
pub(super) struct Claimed {
    ports: Vec<(u64, u64, String)>,
    mmio: Vec<(u64, u64, String)>,
    interrupts: Vec<(u64, String)>,
}

/// Reads a device; `None` (with diagnostics) if anything is wrong.
pub(super) fn read(
    cx: &mut Context<'_>,
    claimed: &mut Claimed,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<Device> {
    let fields = cx.declaration("device", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &KEYS);
    let what = fields.what().to_owned();
    let device = name.value.to_owned();

    let holders = fields.string_list(&mut cx.diags, "holders");
    if fields.get("holders").is_none() {
        fields.missing(&mut cx.diags, "holders");
    }
    for holder in holders.iter().flatten() {
        cx.world_ref(&what, "holder", holder);
    }

    let mut ioports = Vec::new();
    for range in tables(cx, &fields, "ioports") {
        let base = range.required_integer(&mut cx.diags, "base", 0..=0xffff);
        let count = range.required_integer(&mut cx.diags, "count", 1..=0xffff);
        let (Some(base), Some(count)) = (base, count) else {
            continue;
        };
        let last = base.value + count.value - 1;
        if last > 0xffff {
            cx.diags.error(
                &count.span,
                format!(
                    "{}: ports {:#x} + {} run past port 0xffff",
                    range.what(),
                    base.value,
                    count.value
                ),
            );
            continue;
        }
        claim(
            cx,
            &mut claimed.ports,
            &base.span,
            (base.value, last),
            &device,
            &format!("{what}: ports"),
        );
        ioports.push(IoPortRange {
            base: u16::try_from(base.value).unwrap_or(u16::MAX),
            count: u16::try_from(count.value).unwrap_or(u16::MAX),
        });
    }

    let mut mmio = Vec::new();
    for range in tables(cx, &fields, "mmio") {
        let phys = range.required_integer(&mut cx.diags, "phys", 0..=u64::MAX);
        let size = range.required_integer(&mut cx.diags, "size", PAGE..=u64::MAX);
        let (Some(phys), Some(size)) = (phys, size) else {
            continue;
        };
        if phys.value % PAGE != 0 || size.value % PAGE != 0 {
            cx.diags.error(
                &phys.span,
                format!("{}: phys and size must be multiples of 4096", range.what()),
            );
            continue;
        }
        let Some(last) = phys.value.checked_add(size.value - 1) else {
            cx.diags.error(
                &size.span,
                format!("{}: phys + size overflows", range.what()),
            );
            continue;
        };
        claim(
            cx,
            &mut claimed.mmio,
            &phys.span,
            (phys.value, last),
            &device,
            &format!("{what}: MMIO"),
        );
        mmio.push(MmioRange {
            phys: phys.value,
            size: size.value,
        });
    }

    let interrupt = fields.integer(&mut cx.diags, "interrupt", 0..=MAX_INTERRUPT_LINE);
    if let Some(line) = &interrupt {
        if let Some((_, other)) = claimed.interrupts.iter().find(|(l, _)| *l == line.value) {
            cx.diags.error(
                &line.span,
                format!(
                    "{what}: interrupt {} is already used by device \"{other}\"",
                    line.value
                ),
            );
        }
        claimed.interrupts.push((line.value, device.clone()));
    }

    if ioports.is_empty()
        && mmio.is_empty()
        && interrupt.is_none()
        && cx.diags_len() == errors_before
    {
        cx.diags.error(
            &name.span,
            format!("{what} grants no hardware (give it ioports, mmio or interrupt)"),
        );
    }
    if cx.diags_len() != errors_before {
        return None;
    }
    Some(Device {
        name: device,
        holders: holders?.into_iter().map(|h| h.value).collect(),
        ioports,
        mmio,
        interrupt: interrupt.and_then(|l| u8::try_from(l.value).ok()),
        line: cx.line(&name.span),
    })
}

/// `key = { .. }` or `key = [{ .. }, ..]` as field readers named `device "x": key[i]`.
fn tables<'t, 'i>(cx: &mut Context<'_>, fields: &Fields<'t, 'i>, key: &str) -> Vec<Fields<'t, 'i>> {
    let Some(value) = fields.get(key) else {
        return Vec::new();
    };
    let what = fields.what();
    let allowed: &[&str] = if key == "ioports" {
        &["base", "count"]
    } else {
        &["phys", "size"]
    };
    let items: Vec<(String, &'t Spanned<DeValue<'i>>)> = match value.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{what}: {key}[{i}]"), v))
            .collect(),
        _ => vec![(format!("{what}: {key}"), value)],
    };
    let mut out = Vec::new();
    for (name, item) in items {
        if let Some(range) = Fields::new(&mut cx.diags, name, item.span(), item) {
            range.only(&mut cx.diags, allowed);
            out.push(range);
        }
    }
    out
}

/// Records `[first, last]` as claimed by `device`, reporting any overlap.
fn claim(
    cx: &mut Context<'_>,
    list: &mut Vec<(u64, u64, String)>,
    span: &std::ops::Range<usize>,
    (first, last): (u64, u64),
    device: &str,
    what: &str,
) {
    if let Some((a, b, other)) = list.iter().find(|(a, b, _)| first <= *b && *a <= last) {
        cx.diags.error(
            span,
            format!("{what} {first:#x}..={last:#x} overlap {a:#x}..={b:#x} of device \"{other}\""),
        );
    }
    list.push((first, last, device.to_owned()));
}
