//! Reading `[memory.<name>]` (RAM allocated at boot, shared with named rights) and
//! `[notifications.<name>]` (one waiter, any signallers) tables.

use esker_abi::Rights;

use super::{Context, check_name, worlds::narrow};
use crate::model::{MEMORY_RIGHTS, MemoryRegion, Notification, Share};
use crate::toml_read::{DeValue, Located, Spanned, string_list};

const MEMORY_KEYS: [&str; 3] = ["size_kib", "owner_vm", "shared"];
const NOTIFICATION_KEYS: [&str; 2] = ["waiter", "signallers"];

/// Reads a memory region; `None` (with diagnostics) if anything is wrong.
pub(super) fn read_region(
    cx: &mut Context<'_>,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<MemoryRegion> {
    let fields = cx.declaration("memory", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &MEMORY_KEYS);
    let what = fields.what().to_owned();

    let size_kib = fields.required_integer(&mut cx.diags, "size_kib", 1..=u64::from(u32::MAX));
    if let Some(kib) = &size_kib
        && kib.value % 4 != 0
    {
        cx.diags.error(
            &kib.span,
            format!("{what}: size_kib = {} is not a multiple of 4", kib.value),
        );
    }
    let owner_vm = fields.string(&mut cx.diags, "owner_vm");
    if let Some(vm) = &owner_vm {
        check_name(&mut cx.diags, &what, "owner_vm", vm);
    }

    let mut shared = Vec::new();
    let entries = fields.table(&mut cx.diags, "shared");
    if entries.as_ref().is_none_or(Vec::is_empty)
        && fields.get("shared").is_none_or(|v| v.get_ref().is_table())
    {
        cx.diags.error(
            &name.span,
            format!("{what} is shared with no world (add shared = {{ <world> = [<rights>] }})"),
        );
    }
    for (world, rights_value) in entries.unwrap_or_default() {
        let world = Located {
            value: world.value.to_owned(),
            span: world.span.clone(),
        };
        cx.world_ref(&what, "shared world", &world);
        let key = format!("the rights of world \"{}\"", world.value);
        let Some(names) = string_list(&mut cx.diags, &what, &key, rights_value) else {
            continue;
        };
        if names.is_empty() {
            cx.diags.error(
                &rights_value.span(),
                format!("{what}: world \"{}\" is given no rights", world.value),
            );
        }
        let mut rights = Rights::NONE;
        for right in names {
            match Rights::from_name(&right.value) {
                Some(r) if MEMORY_RIGHTS.contains(&r) => rights = rights | r,
                Some(_) => cx.diags.error(
                    &right.span,
                    format!(
                        "{what}: right \"{}\" (given to world \"{}\") does not apply to memory (memory rights: {})",
                        right.value,
                        world.value,
                        memory_right_names()
                    ),
                ),
                None => cx.diags.error(
                    &right.span,
                    format!(
                        "{what}: unknown right \"{}\" given to world \"{}\" (memory rights: {})",
                        right.value,
                        world.value,
                        memory_right_names()
                    ),
                ),
            }
        }
        shared.push(Share {
            world: world.value,
            rights,
        });
    }

    if cx.diags_len() != errors_before {
        return None;
    }
    Some(MemoryRegion {
        name: name.value.to_owned(),
        size_kib: narrow(size_kib?.value),
        owner_vm: owner_vm.map(|v| v.value),
        shared,
        line: cx.line(&name.span),
    })
}

/// Reads a notification; `None` (with diagnostics) if anything is wrong.
pub(super) fn read_notification(
    cx: &mut Context<'_>,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<Notification> {
    let fields = cx.declaration("notification", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &NOTIFICATION_KEYS);
    let what = fields.what().to_owned();

    let waiter = fields.required_string(&mut cx.diags, "waiter");
    if let Some(waiter) = &waiter {
        cx.world_ref(&what, "waiter", waiter);
    }
    let signallers = fields
        .string_list(&mut cx.diags, "signallers")
        .unwrap_or_default();
    for signaller in &signallers {
        cx.world_ref(&what, "signaller", signaller);
    }

    if cx.diags_len() != errors_before {
        return None;
    }
    Some(Notification {
        name: name.value.to_owned(),
        waiter: waiter?.value,
        signallers: signallers.into_iter().map(|s| s.value).collect(),
        line: cx.line(&name.span),
    })
}

/// `read, write, execute, grant, map`.
fn memory_right_names() -> String {
    let names: Vec<String> = MEMORY_RIGHTS.iter().map(ToString::to_string).collect();
    names.join(", ")
}
