//! Reading a spanned TOML document field by field, reporting every problem with its line.
//!
//! The `toml` crate's [`DeTable`] keeps the byte span of every key and value. This module
//! wraps it so that callers ask for typed fields ("a string", "an integer in range", "a
//! list of strings") and every wrong type, missing key or unknown key becomes one
//! [`Diagnostic`](crate::Diagnostic) — reading goes on after an error, so a file with five
//! mistakes yields five messages. It is public because `capaudit` reads `audit.toml` the
//! same way; it knows nothing about manifests.

use std::ops::{Range, RangeInclusive};

pub use toml::Spanned;
pub use toml::de::{DeTable, DeValue};

use crate::diagnostic::Diagnostics;

/// A byte range in the source.
pub type Span = Range<usize>;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Its span in the source.
    pub span: Span,
}

/// One entry of a table: its key (with span) and its value.
pub type Entry<'t, 'i> = (Located<&'t str>, &'t Spanned<DeValue<'i>>);

/// Parses a document; every syntax error (duplicate keys included) becomes a diagnostic and
/// the result is `None` if there was any, so that later checks never see a half-read file.
pub fn parse_document<'i>(diags: &mut Diagnostics<'_>, text: &'i str) -> Option<DeTable<'i>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(table.into_inner());
    }
    let mut duplicate_headers = Vec::new();
    for error in errors {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim();
        if message != "duplicate key" {
            diags.error(&span, message.to_owned());
            continue;
        }
        // A table declared twice also makes each key it repeats a duplicate: report the
        // table once, not every key under it.
        let header = header_line(text, span.start);
        if header.is_some() && duplicate_headers.contains(&header) {
            continue;
        }
        if let Some(start) = header.filter(|h| *h == line_start(text, span.start)) {
            duplicate_headers.push(header);
            let line = text[start..].lines().next().unwrap_or("");
            let table = line
                .split_once(']')
                .map_or(line, |(t, _)| t)
                .trim_start()
                .trim_start_matches('[')
                .trim();
            diags.error(
                &span,
                format!("[{table}] is declared twice (each name may be declared only once)"),
            );
            continue;
        }
        let key = text
            .get(span.clone())
            .unwrap_or("")
            .trim_matches(|c| c == '"' || c == '\'');
        diags.error(
            &span,
            format!("duplicate key \"{key}\" (each name may be declared only once)"),
        );
    }
    None
}

/// Byte offset of the start of the line containing `offset`.
fn line_start(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1)
}

/// Start of the nearest `[table]` header line at or before `offset`.
fn header_line(text: &str, offset: usize) -> Option<usize> {
    let mut at = line_start(text, offset);
    loop {
        if text
            .get(at..)
            .is_some_and(|rest| rest.trim_start().starts_with('['))
        {
            return Some(at);
        }
        if at == 0 {
            return None;
        }
        at = line_start(text, at - 1);
    }
}

/// The entries of a table in the order they were written.
pub fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut list: Vec<_> = table
        .iter()
        .map(|(k, v)| {
            (
                Located {
                    value: k.get_ref().as_ref(),
                    span: k.span(),
                },
                v,
            )
        })
        .collect();
    list.sort_by_key(|(k, _)| k.span.start);
    list
}

/// "a string", "an integer", ... for messages.
pub fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads a string; `what` prefixes the message, `key` names the field.
pub fn string(
    diags: &mut Diagnostics<'_>,
    what: &str,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Located<String>> {
    match value.get_ref() {
        DeValue::String(s) => Some(Located {
            value: s.to_string(),
            span: value.span(),
        }),
        other => {
            diags.error(
                &value.span(),
                format!(
                    "{what}: {key} must be a string (found {})",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// Reads a boolean.
pub fn boolean(
    diags: &mut Diagnostics<'_>,
    what: &str,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Located<bool>> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(Located {
            value: *b,
            span: value.span(),
        }),
        other => {
            diags.error(
                &value.span(),
                format!(
                    "{what}: {key} must be true or false (found {})",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// Reads a non-negative integer within `range`.
pub fn integer(
    diags: &mut Diagnostics<'_>,
    what: &str,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    range: RangeInclusive<u64>,
) -> Option<Located<u64>> {
    let DeValue::Integer(int) = value.get_ref() else {
        diags.error(
            &value.span(),
            format!(
                "{what}: {key} must be an integer (found {})",
                type_name(value.get_ref())
            ),
        );
        return None;
    };
    let parsed = u64::from_str_radix(int.as_str(), int.radix())
        .ok()
        .filter(|n| range.contains(n));
    if parsed.is_none() {
        diags.error(
            &value.span(),
            format!(
                "{what}: {key} = {int} is out of range ({}..={})",
                range.start(),
                range.end()
            ),
        );
    }
    parsed.map(|n| Located {
        value: n,
        span: value.span(),
    })
}

/// Reads an array, returning its elements.
pub fn array<'t, 'i>(
    diags: &mut Diagnostics<'_>,
    what: &str,
    key: &str,
    value: &'t Spanned<DeValue<'i>>,
) -> Option<&'t [Spanned<DeValue<'i>>]> {
    match value.get_ref() {
        DeValue::Array(items) => Some(items.as_ref()),
        other => {
            diags.error(
                &value.span(),
                format!(
                    "{what}: {key} must be an array (found {})",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// Reads an array of strings, reporting (and dropping) any element listed twice; `None` if
/// it is not an array of strings.
pub fn string_list(
    diags: &mut Diagnostics<'_>,
    what: &str,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vec<Located<String>>> {
    let items = array(diags, what, key, value)?;
    let mut out: Vec<Located<String>> = Vec::new();
    let mut all_strings = true;
    for item in items {
        let Some(s) = string(diags, what, &format!("every element of {key}"), item) else {
            all_strings = false;
            continue;
        };
        if out.iter().any(|o| o.value == s.value) {
            diags.error(
                &s.span,
                format!("{what}: \"{}\" is listed twice in {key}", s.value),
            );
            continue;
        }
        out.push(s);
    }
    all_strings.then_some(out)
}

/// A table being read field by field.
pub struct Fields<'t, 'i> {
    what: String,
    span: Span,
    table: &'t DeTable<'i>,
}

impl<'t, 'i> Fields<'t, 'i> {
    /// Starts reading `value` as the table described by `what` (e.g. `world "hostd"`), which
    /// was declared at `span`. Reports and returns `None` if it is not a table.
    pub fn new(
        diags: &mut Diagnostics<'_>,
        what: String,
        span: Span,
        value: &'t Spanned<DeValue<'i>>,
    ) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(table) => Some(Self { what, span, table }),
            other => {
                diags.error(
                    &value.span(),
                    format!("{what} must be a table (found {})", type_name(other)),
                );
                None
            }
        }
    }

    /// The description used as the message prefix.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Where the table was declared.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Reports every key not in `allowed`.
    pub fn only(&self, diags: &mut Diagnostics<'_>, allowed: &[&str]) {
        for (key, _) in entries(self.table) {
            if !allowed.contains(&key.value) {
                diags.error(
                    &key.span,
                    format!(
                        "{}: unknown key {} (expected one of: {})",
                        self.what,
                        key.value,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    /// Reports a missing required key at the table's declaration.
    pub fn missing(&self, diags: &mut Diagnostics<'_>, key: &str) {
        diags.error(&self.span, format!("{}: missing {key}", self.what));
    }

    /// An optional string.
    pub fn string(&self, diags: &mut Diagnostics<'_>, key: &str) -> Option<Located<String>> {
        string(diags, &self.what, key, self.get(key)?)
    }

    /// A required string.
    pub fn required_string(
        &self,
        diags: &mut Diagnostics<'_>,
        key: &str,
    ) -> Option<Located<String>> {
        if self.get(key).is_none() {
            self.missing(diags, key);
        }
        self.string(diags, key)
    }

    /// An optional boolean.
    pub fn boolean(&self, diags: &mut Diagnostics<'_>, key: &str) -> Option<Located<bool>> {
        boolean(diags, &self.what, key, self.get(key)?)
    }

    /// An optional integer within `range`.
    pub fn integer(
        &self,
        diags: &mut Diagnostics<'_>,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Option<Located<u64>> {
        integer(diags, &self.what, key, self.get(key)?, range)
    }

    /// A required integer within `range`.
    pub fn required_integer(
        &self,
        diags: &mut Diagnostics<'_>,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Option<Located<u64>> {
        if self.get(key).is_none() {
            self.missing(diags, key);
        }
        self.integer(diags, key, range)
    }

    /// An optional list of distinct strings.
    pub fn string_list(
        &self,
        diags: &mut Diagnostics<'_>,
        key: &str,
    ) -> Option<Vec<Located<String>>> {
        string_list(diags, &self.what, key, self.get(key)?)
    }

    /// An optional sub-table, as its entries in written order.
    pub fn table(&self, diags: &mut Diagnostics<'_>, key: &str) -> Option<Vec<Entry<'t, 'i>>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(entries(table)),
            other => {
                diags.error(
                    &value.span(),
                    format!(
                        "{}: {key} must be a table (found {})",
                        self.what,
                        type_name(other)
                    ),
                );
                None
            }
        }
    }
}
