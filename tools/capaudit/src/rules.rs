//! The rule file, `audit.toml`: the policy the audit proves beyond its always-on rules.
//!
//! ```toml
//! [[only_callers]]           # no world outside `worlds` may hold a capability that
//! channel = "auth"           # allows this operation of this channel
//! operation = "issue_ticket"
//! worlds = ["hostd"]
//! ```
//!
//! Every rule is checked against the manifest when it is read: an unknown channel,
//! operation or world is an error (`audit.toml:LINE: ...`), never a silently empty rule.

use std::path::Path;

use esker_manifest::toml_read::{Fields, array, entries, parse_document};
use esker_manifest::{Diagnostic, Diagnostics, Manifest, Source};

/// The rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// The file they were read from.
    pub file: String,
    /// `[[only_callers]]` rules.
    pub only_callers: Vec<OnlyCallers>,
}

/// Only `worlds` may hold a capability allowing `channel`'s `operation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlyCallers {
    /// The channel.
    pub channel: String,
    /// One of its protocol's operations.
    pub operation: String,
    /// The worlds allowed to invoke it.
    pub worlds: Vec<String>,
    /// Line of the rule.
    pub line: usize,
}

const SECTIONS: [&str; 1] = ["only_callers"];

impl Rules {
    /// Reads and checks the rules at `path` against `manifest`.
    pub fn load(path: &Path, manifest: &Manifest) -> Result<Self, Vec<Diagnostic>> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &file, manifest),
            Err(e) => Err(vec![Diagnostic {
                file,
                line: 0,
                message: format!("cannot read the rules: {e}"),
            }]),
        }
    }

    /// Reads and checks rules; `file` names them in diagnostics.
    pub fn parse(text: &str, file: &str, manifest: &Manifest) -> Result<Self, Vec<Diagnostic>> {
        let mut diags = Diagnostics::new(Source { file, text });
        let Some(document) = parse_document(&mut diags, text) else {
            return Err(diags.into_sorted());
        };
        let mut rules = Self {
            file: file.to_owned(),
            only_callers: Vec::new(),
        };
        for (key, _) in entries(&document) {
            if !SECTIONS.contains(&key.value) {
                diags.error(
                    &key.span,
                    format!(
                        "unknown rule \"{}\" (known: {})",
                        key.value,
                        SECTIONS.join(", ")
                    ),
                );
            }
        }
        if let Some(value) = document.get("only_callers")
            && let Some(items) = array(&mut diags, "only_callers", "the rule list", value)
        {
            for item in items {
                let what = "only_callers".to_owned();
                if let Some(rule) = Fields::new(&mut diags, what, item.span(), item) {
                    rules
                        .only_callers
                        .extend(only_callers(&mut diags, &rule, manifest));
                }
            }
        }
        if diags.is_empty() {
            Ok(rules)
        } else {
            Err(diags.into_sorted())
        }
    }
}

fn only_callers(
    diags: &mut Diagnostics<'_>,
    rule: &Fields<'_, '_>,
    manifest: &Manifest,
) -> Option<OnlyCallers> {
    rule.only(diags, &["channel", "operation", "worlds"]);
    let before = diags.len();
    let channel = rule.required_string(diags, "channel");
    let operation = rule.required_string(diags, "operation");
    let worlds = rule.string_list(diags, "worlds");
    if rule.get("worlds").is_none() {
        rule.missing(diags, "worlds");
    }
    let declared = channel.as_ref().and_then(|c| {
        let found = manifest.channel(&c.value);
        if found.is_none() {
            diags.error(
                &c.span,
                format!(
                    "only_callers: channel \"{}\" is not declared in {}",
                    c.value, manifest.file
                ),
            );
        }
        found
    });
    if let (Some(declared), Some(op)) = (declared, &operation) {
        let ops = esker_protocols::operations(&declared.protocol).unwrap_or_default();
        if !ops.contains(&op.value.as_str()) {
            diags.error(
                &op.span,
                format!(
                    "only_callers: channel \"{}\" (protocol \"{}\") has no operation \"{}\" (it has: {})",
                    declared.name,
                    declared.protocol,
                    op.value,
                    ops.join(", ")
                ),
            );
        }
    }
    for world in worlds.iter().flatten() {
        if manifest.world(&world.value).is_none() {
            diags.error(
                &world.span,
                format!(
                    "only_callers: world \"{}\" is not declared in {}",
                    world.value, manifest.file
                ),
            );
        }
    }
    if diags.len() != before {
        return None;
    }
    let line = diags.source().line(rule.span());
    Some(OnlyCallers {
        channel: channel?.value,
        operation: operation?.value,
        worlds: worlds?.into_iter().map(|w| w.value).collect(),
        line,
    })
}
