//! Reading one `[worlds.<name>]` table: program, memory budget, scheduling, guest exposure.

use esker_kernel_core::manifest::SchedParams;

use super::{Context, check_name};
use crate::model::World;
use crate::toml_read::{DeValue, Located, Spanned, array, integer};

const KEYS: [&str; 11] = [
    "binary",
    "memory_kib",
    "shares",
    "reservation_mhz",
    "limit_mhz",
    "affinity",
    "coschedule",
    "guest_facing",
    "vm",
    "controls",
    "console",
];

/// Most shares a world may be given.
pub const MAX_SHARES: u64 = 1_000_000;

/// Reads a world; `None` (with diagnostics) if anything is wrong.
pub(super) fn read(
    cx: &mut Context<'_>,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<World> {
    let fields = cx.declaration("world", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &KEYS);
    let what = fields.what().to_owned();

    let binary = fields.required_string(&mut cx.diags, "binary");
    if let Some(binary) = &binary {
        check_name(&mut cx.diags, &what, "binary", binary);
    }
    let memory_kib = fields.required_integer(&mut cx.diags, "memory_kib", 1..=u64::from(u32::MAX));
    if let Some(kib) = &memory_kib
        && kib.value % 4 != 0
    {
        cx.diags.error(
            &kib.span,
            format!("{what}: memory_kib = {} is not a multiple of 4", kib.value),
        );
    }

    let mut sched = SchedParams::default();
    if let Some(shares) = fields.integer(&mut cx.diags, "shares", 1..=MAX_SHARES) {
        sched.shares = narrow(shares.value);
    }
    let reservation = fields.integer(&mut cx.diags, "reservation_mhz", 0..=u64::from(u32::MAX));
    let limit = fields.integer(&mut cx.diags, "limit_mhz", 0..=u64::from(u32::MAX));
    if let Some(r) = &reservation {
        sched.reservation_mhz = narrow(r.value);
    }
    if let Some(l) = &limit {
        sched.limit_mhz = narrow(l.value);
        if l.value != 0 && l.value < u64::from(sched.reservation_mhz) {
            cx.diags.error(
                &l.span,
                format!(
                    "{what}: limit_mhz = {} is below reservation_mhz = {}",
                    l.value, sched.reservation_mhz
                ),
            );
        }
    }
    if let Some(value) = fields.get("affinity") {
        sched.affinity = affinity(cx, &what, value);
    }
    // `coschedule = false`: the world's threads (a VM's vCPUs) are scheduled each on
    // its own instead of relaxed co-scheduling.
    if let Some(on) = fields.boolean(&mut cx.diags, "coschedule") {
        sched.coschedule = on.value;
    }

    let guest_facing = fields
        .boolean(&mut cx.diags, "guest_facing")
        .is_some_and(|b| b.value);
    let vm = fields.string(&mut cx.diags, "vm");
    if let Some(vm) = &vm {
        check_name(&mut cx.diags, &what, "vm", vm);
    }
    if guest_facing && vm.is_none() && fields.get("vm").is_none() {
        cx.diags.error(
            &name.span,
            format!("{what}: a guest-facing world must name the VM it monitors (vm = \"<name>\")"),
        );
    }

    // `controls = ["<world>", ..]`: World capabilities (read statistics, change
    // scheduling) on those worlds.
    let mut controls = Vec::new();
    if let Some(value) = fields.get("controls") {
        for target in fields
            .string_list(&mut cx.diags, "controls")
            .unwrap_or_default()
        {
            if cx.world_ref(&what, "controls", &target) && !controls.contains(&target.value) {
                controls.push(target.value);
            }
        }
        let _ = value;
    }

    // `console = true`: input typed at the host console (COM1) goes to this world.
    let console = fields
        .boolean(&mut cx.diags, "console")
        .is_some_and(|b| b.value);

    if cx.diags_len() != errors_before {
        return None;
    }
    Some(World {
        controls,
        console,
        name: name.value.to_owned(),
        binary: binary?.value,
        memory_kib: narrow(memory_kib?.value),
        sched,
        guest_facing,
        vm: vm.map(|v| v.value),
        line: cx.line(&name.span),
    })
}

/// `affinity = [0, 1]` as a CPU mask (0 if the list has errors, which are reported).
fn affinity(cx: &mut Context<'_>, what: &str, value: &Spanned<DeValue<'_>>) -> u64 {
    let Some(items) = array(&mut cx.diags, what, "affinity", value) else {
        return 0;
    };
    if items.is_empty() {
        cx.diags.error(
            &value.span(),
            format!("{what}: affinity = [] allows no CPU (leave it out to allow all)"),
        );
    }
    let mut mask = 0u64;
    for item in items {
        let Some(cpu) = integer(
            &mut cx.diags,
            what,
            "every CPU in affinity",
            item,
            0..=u64::MAX,
        ) else {
            continue;
        };
        if cpu.value > 63 {
            cx.diags.error(
                &cpu.span,
                format!(
                    "{what}: CPU {} in affinity does not exist (CPUs are 0..=63)",
                    cpu.value
                ),
            );
        } else {
            if mask & (1 << cpu.value) != 0 {
                cx.diags.error(
                    &cpu.span,
                    format!("{what}: CPU {} is listed twice in affinity", cpu.value),
                );
            }
            mask |= 1 << cpu.value;
        }
    }
    mask
}

/// A value already range-checked to fit in `u32`.
pub(super) fn narrow(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
