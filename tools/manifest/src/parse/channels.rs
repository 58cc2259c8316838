//! Reading one `[channels.<name>]` table: its server, protocol and clients' operations.
//!
//! The protocol's operation list in `esker-protocols` is the vocabulary: a client may only
//! be given operations its channel's protocol has.

use super::Context;
use crate::model::{Channel, Client};
use crate::toml_read::{DeValue, Located, Spanned, string, string_list};

const KEYS: [&str; 4] = ["server", "protocol", "clients", "grant"];

/// Reads a channel; `None` (with diagnostics) if anything is wrong.
pub(super) fn read(
    cx: &mut Context<'_>,
    name: Located<&str>,
    value: &Spanned<DeValue<'_>>,
) -> Option<Channel> {
    let fields = cx.declaration("channel", &name, value)?;
    let errors_before = cx.diags_len();
    fields.only(&mut cx.diags, &KEYS);
    let what = fields.what().to_owned();

    let before_server = cx.diags_len();
    let servers = match fields.get("server") {
        None => Vec::new(),
        Some(v) if matches!(v.get_ref(), DeValue::Array(_)) => {
            string_list(&mut cx.diags, &what, "server", v).unwrap_or_default()
        }
        Some(v) => string(&mut cx.diags, &what, "server", v)
            .into_iter()
            .collect(),
    };
    if servers.is_empty() && cx.diags_len() == before_server {
        cx.diags.error(
            &name.span,
            format!("{what} has no server (set server = \"<world>\")"),
        );
    }
    for server in &servers {
        cx.world_ref(&what, "server", server);
    }

    let protocol = fields.required_string(&mut cx.diags, "protocol");
    let operations = protocol.as_ref().and_then(|p| {
        let ops = esker_protocols::operations(&p.value);
        if ops.is_none() {
            let known: Vec<&str> = esker_protocols::PROTOCOLS.iter().map(|(n, _)| *n).collect();
            cx.diags.error(
                &p.span,
                format!(
                    "{what}: unknown protocol \"{}\" (known: {})",
                    p.value,
                    known.join(", ")
                ),
            );
        }
        ops
    });

    let mut clients = Vec::new();
    for (client, ops_value) in fields.table(&mut cx.diags, "clients").unwrap_or_default() {
        let world = Located {
            value: client.value.to_owned(),
            span: client.span.clone(),
        };
        cx.world_ref(&what, "client", &world);
        if servers.iter().any(|s| s.value == world.value) {
            cx.diags.error(
                &client.span,
                format!(
                    "{what}: world \"{}\" is both its server and a client",
                    world.value
                ),
            );
        }
        let key = format!("the operations of client \"{}\"", world.value);
        let ops = string_list(&mut cx.diags, &what, &key, ops_value);
        if ops.as_ref().is_some_and(Vec::is_empty) {
            cx.diags.error(
                &ops_value.span(),
                format!("{what}: client \"{}\" is given no operations", world.value),
            );
        }
        let ops = ops.unwrap_or_default();
        if let (Some(known), Some(protocol)) = (operations, &protocol) {
            for op in ops.iter().filter(|op| !known.contains(&op.value.as_str())) {
                cx.diags.error(
                    &op.span,
                    format!(
                        "{what}: client \"{}\" is given operation \"{}\", which protocol \"{}\" does not have (it has: {})",
                        world.value,
                        op.value,
                        protocol.value,
                        known.join(", ")
                    ),
                );
            }
        }
        clients.push(Client {
            world: world.value,
            operations: ops.into_iter().map(|o| o.value).collect(),
            grant: false,
        });
    }

    // `grant = ["<client>", ..]`: those clients may also derive and pass on their
    // capability (CALL + GRANT).
    if let Some(value) = fields.get("grant") {
        for granted in string_list(&mut cx.diags, &what, "grant", value).unwrap_or_default() {
            match clients.iter_mut().find(|c| c.world == granted.value) {
                Some(client) => client.grant = true,
                None => cx.diags.error(
                    &granted.span,
                    format!(
                        "{what}: grant names \"{}\", which is not one of its clients",
                        granted.value
                    ),
                ),
            }
        }
    }

    if cx.diags_len() != errors_before {
        return None;
    }
    Some(Channel {
        name: name.value.to_owned(),
        servers: servers.into_iter().map(|s| s.value).collect(),
        protocol: protocol?.value,
        clients,
        line: cx.line(&name.span),
    })
}
