//! VM configuration files.
//!
//! A VM is described by a small file in a subset of TOML, parsed here by hand so that the
//! same code runs in the `no_std` monitor and in the host build tool:
//!
//! ```toml
//! name = "web-1"              # 1-31 characters of a-z, 0-9 and '-', starting with a letter
//! memory_mb = 512             # 1..=3072: guest RAM sits below the 3 GiB PCI hole
//! vcpus = 2                   # 1..=16, default 1
//! kernel = "/vms/web-1/vmlinuz"
//! initrd = '/vms/web-1/initrd.img'   # optional
//! cmdline = "console=ttyS0 quiet"    # default ""
//!
//! [cpu]                       # or dotted keys at the top: cpu.shares = "high"
//! shares = "high"             # 1..=1_000_000, or "low"/"normal"/"high" (500/1000/2000 per vCPU)
//! reservation_mhz = 1_000     # default 0
//! limit_mhz = "unlimited"     # >= 1 and >= reservation_mhz, or "unlimited" (the default)
//! affinity = [0, 1, 2, 3]     # CPU numbers 0..=63; default: any CPU
//! coschedule = "relaxed"      # or "off": vCPUs scheduled independently (default relaxed)
//! ```
//!
//! The subset: `#` comments, blank lines, bare or quoted keys (dotted keys allowed), one
//! `[cpu]` table, basic strings with the TOML escapes (`\" \\ \n \t \r \b \f \uXXXX
//! \UXXXXXXXX`), literal `'strings'`, decimal integers with `_` separators (and `0x`,
//! `0o`, `0b` forms), and arrays of integers (which may span lines). Everything else
//! (floats, booleans, dates, multi-line strings, inline tables, arrays of tables) is
//! refused with a message naming the line.
//!
//! [`parse`] checks every key as it reads it, so the first error reported is the first
//! one in the file; [`VmConfig::to_toml`] writes a file that parses back to the same
//! configuration; [`VmConfig::validate`] re-checks a configuration that arrived some other
//! way (a postcard message from another world is as hostile as a file).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};
use serde::{Deserialize, Serialize};

/// Largest `memory_mb`: guest RAM must stay below the PCI hole at 3 GiB.
pub const MAX_MEMORY_MB: u32 = 3072;
/// Largest `vcpus`.
pub const MAX_VCPUS: u32 = 16;
/// Largest numeric `cpu.shares`.
pub const MAX_SHARES: u32 = 1_000_000;
/// Longest VM name.
pub const MAX_NAME_LEN: usize = 31;
/// CPU numbers in `cpu.affinity` are below this (one bit each in a `u64` mask).
pub const MAX_CPUS: u32 = 64;

/// One VM's configuration, as [`parse`] returns it (all defaults filled in, shares
/// levels resolved to numbers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// The VM's name: 1–31 characters of `a-z`, `0-9` and `-`, starting with a letter.
    #[serde(with = "text")]
    pub name: String,
    /// Guest RAM in MiB (1..=[`MAX_MEMORY_MB`]).
    pub memory_mb: u32,
    /// Virtual CPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// Path of the kernel image (a Linux bzImage or a Multiboot kernel); never empty.
    #[serde(with = "text")]
    pub kernel: String,
    /// Path of the initial RAM disk, if any; never empty.
    #[serde(with = "optional_text")]
    pub initrd: Option<String>,
    /// The kernel command line (may be empty).
    #[serde(with = "text")]
    pub cmdline: String,
    /// CPU scheduling settings.
    pub cpu: CpuConfig,
}

/// The `[cpu]` table: how the VM's vCPUs share the host's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuConfig {
    /// Proportional-share weight for the whole VM (1..=[`MAX_SHARES`]); a level in the
    /// file is already multiplied by the number of vCPUs.
    pub shares: u32,
    /// Guaranteed CPU time in MHz (0 = none).
    pub reservation_mhz: u32,
    /// Cap in MHz (at least 1 and at least the reservation); `None` = unlimited.
    pub limit_mhz: Option<u32>,
    /// Host CPUs the vCPUs may run on, one bit per CPU number; `None` = any CPU. Never
    /// `Some(0)`.
    pub affinity: Option<u64>,
    /// Relaxed co-scheduling of the vCPUs (`coschedule = "relaxed"`, the default): none
    /// runs far ahead of a runnable sibling. `false` (`"off"`): each vCPU is scheduled
    /// on its own.
    pub coschedule: bool,
}

impl CpuConfig {
    /// The settings when the file has no `[cpu]` table: normal shares for `vcpus`
    /// vCPUs, no reservation, no limit, any CPU.
    pub const fn default_for(vcpus: u32) -> Self {
        Self {
            shares: SharesLevel::Normal.per_vcpu() * vcpus,
            reservation_mhz: 0,
            limit_mhz: None,
            affinity: None,
            coschedule: true,
        }
    }
}

/// The ESX-style share levels `cpu.shares` may name instead of a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharesLevel {
    /// 500 shares per vCPU.
    Low,
    /// 1000 shares per vCPU (the default).
    Normal,
    /// 2000 shares per vCPU.
    High,
}

impl SharesLevel {
    /// Shares per vCPU at this level.
    pub const fn per_vcpu(self) -> u32 {
        match self {
            Self::Low => 500,
            Self::Normal => 1000,
            Self::High => 2000,
        }
    }

    /// The level a file names (`"low"`, `"normal"`, `"high"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "low" => Some(Self::Low),
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The 1-based line of the offending text, when the error has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

/// What is wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The text is not in the TOML subset (the message says what was expected).
    Syntax(&'static str),
    /// A value that is not a string, an integer or an array of integers.
    UnsupportedValue(String),
    /// Text that looks like an integer but is not one (leading zeros, misplaced `_`,
    /// out of the 64-bit range).
    InvalidInteger(String),
    /// A key no VM setting has (dotted, e.g. `cpu.sharez`).
    UnknownKey(String),
    /// A table other than `[cpu]`.
    UnknownTable(String),
    /// A key given twice.
    DuplicateKey(String),
    /// A table defined twice (also `[cpu]` after `cpu.` dotted keys).
    DuplicateTable(String),
    /// A required key is absent.
    MissingKey(&'static str),
    /// A value of the wrong type.
    WrongType {
        /// The key.
        key: &'static str,
        /// What it must be, e.g. "a string".
        expected: &'static str,
    },
    /// An integer outside the key's range.
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// The value given.
        got: i64,
    },
    /// A name that breaks the naming rule.
    InvalidName(String),
    /// A path that is empty.
    EmptyPath(&'static str),
    /// A string containing a NUL character (paths and command lines cannot hold one).
    ContainsNul(&'static str),
    /// `cpu.shares` names no known level.
    InvalidShares(String),
    /// `cpu.limit_mhz` is a string other than `"unlimited"`.
    InvalidLimit(String),
    /// The limit is below the reservation.
    LimitBelowReservation {
        /// `cpu.limit_mhz`.
        limit: u32,
        /// `cpu.reservation_mhz`.
        reservation: u32,
    },
    /// `cpu.affinity` names no CPU.
    EmptyAffinity,
    /// `cpu.affinity` names a CPU number outside 0..=63.
    AffinityOutOfRange(i64),
    /// `cpu.affinity` names a CPU twice.
    DuplicateAffinity(u32),
    /// `cpu.coschedule` is neither "relaxed" nor "off".
    InvalidCoschedule(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(message) => f.write_str(message),
            Self::UnsupportedValue(value) => write!(
                f,
                "unsupported value {value:?}: expected a string, an integer or an array of integers"
            ),
            Self::InvalidInteger(text) => write!(f, "{text:?} is not a valid 64-bit integer"),
            Self::UnknownKey(key) => write!(f, "unknown key {key:?}"),
            Self::UnknownTable(table) => write!(f, "unknown table [{table}]"),
            Self::DuplicateKey(key) => write!(f, "duplicate key {key:?}"),
            Self::DuplicateTable(table) => write!(f, "table [{table}] is defined twice"),
            Self::MissingKey(key) => write!(f, "missing required key {key:?}"),
            Self::WrongType { key, expected } => write!(f, "{key} must be {expected}"),
            Self::OutOfRange { key, min, max, got } => {
                write!(f, "{key} must be between {min} and {max}, got {got}")
            }
            Self::InvalidName(name) => write!(
                f,
                "name {name:?} must be 1-{MAX_NAME_LEN} characters of a-z, 0-9 and '-', \
                 starting with a letter"
            ),
            Self::EmptyPath(key) => write!(f, "{key} must not be empty"),
            Self::ContainsNul(key) => write!(f, "{key} must not contain a NUL character"),
            Self::InvalidShares(value) => write!(
                f,
                "shares must be 1-{MAX_SHARES} or \"low\", \"normal\" or \"high\", got {value:?}"
            ),
            Self::InvalidLimit(value) => write!(
                f,
                "limit_mhz must be a number of MHz or \"unlimited\", got {value:?}"
            ),
            Self::LimitBelowReservation { limit, reservation } => write!(
                f,
                "limit_mhz ({limit}) is below reservation_mhz ({reservation})"
            ),
            Self::EmptyAffinity => f.write_str("affinity must name at least one CPU"),
            Self::AffinityOutOfRange(cpu) => write!(
                f,
                "affinity names CPU {cpu}; CPUs are numbered 0 to {}",
                MAX_CPUS - 1
            ),
            Self::DuplicateAffinity(cpu) => write!(f, "affinity names CPU {cpu} twice"),
            Self::InvalidCoschedule(value) => write!(
                f,
                "coschedule must be \"relaxed\" or \"off\", got {value:?}"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

impl ConfigError {
    const fn at(line: usize, kind: ConfigErrorKind) -> Self {
        Self {
            line: Some(line),
            kind,
        }
    }

    const fn global(kind: ConfigErrorKind) -> Self {
        Self { line: None, kind }
    }
}

/// Parses a VM configuration file.
pub fn parse(text: &str) -> Result<VmConfig, ConfigError> {
    let mut lexer = Lexer {
        text,
        pos: 0,
        line: 1,
    };
    let mut builder = Builder::default();
    let mut in_cpu_table = false;
    loop {
        lexer.skip_blanks();
        match lexer.peek() {
            None => break,
            Some('\n' | '\r' | '#') => lexer.end_of_line()?,
            Some('[') => {
                let line = lexer.line;
                lexer.bump();
                if lexer.peek() == Some('[') {
                    return Err(lexer.error("arrays of tables ([[...]]) are not supported"));
                }
                let path = lexer.key()?;
                if !lexer.eat(']') {
                    return Err(lexer.error("expected \"]\" after the table name"));
                }
                lexer.end_of_line()?;
                if path.len() != 1 || path[0] != "cpu" {
                    return Err(ConfigError::at(
                        line,
                        ConfigErrorKind::UnknownTable(path.join(".")),
                    ));
                }
                if builder.cpu_table_defined {
                    return Err(ConfigError::at(
                        line,
                        ConfigErrorKind::DuplicateTable("cpu".to_string()),
                    ));
                }
                builder.cpu_table_defined = true;
                in_cpu_table = true;
            }
            Some(_) => {
                let line = lexer.line;
                let mut path = lexer.key()?;
                if !lexer.eat('=') {
                    return Err(lexer.error("expected \"=\" after the key"));
                }
                lexer.skip_blanks();
                let value = lexer.value()?;
                lexer.end_of_line()?;
                if in_cpu_table {
                    path.insert(0, "cpu".to_string());
                } else if path.len() > 1 && path[0] == "cpu" {
                    // Dotted keys define the table: a later [cpu] header would redefine it.
                    builder.cpu_table_defined = true;
                }
                builder.set(line, &path, value)?;
            }
        }
    }
    builder.finish()
}

impl VmConfig {
    /// Bytes of guest RAM.
    pub const fn memory_bytes(&self) -> u64 {
        self.memory_mb as u64 * 1024 * 1024
    }

    /// Writes the configuration as a file [`parse`] reads back to `self` (for a valid
    /// configuration). Strings are written as basic strings with every control
    /// character escaped; shares as a number; limit and affinity only when set.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(&mut out);
        out
    }

    fn write_toml(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "name = {}", Quoted(&self.name))?;
        writeln!(out, "memory_mb = {}", self.memory_mb)?;
        writeln!(out, "vcpus = {}", self.vcpus)?;
        writeln!(out, "kernel = {}", Quoted(&self.kernel))?;
        if let Some(initrd) = &self.initrd {
            writeln!(out, "initrd = {}", Quoted(initrd))?;
        }
        writeln!(out, "cmdline = {}", Quoted(&self.cmdline))?;
        writeln!(out)?;
        writeln!(out, "[cpu]")?;
        writeln!(out, "shares = {}", self.cpu.shares)?;
        writeln!(out, "reservation_mhz = {}", self.cpu.reservation_mhz)?;
        match self.cpu.limit_mhz {
            Some(limit) => writeln!(out, "limit_mhz = {limit}")?,
            None => writeln!(out, "limit_mhz = \"unlimited\"")?,
        }
        if let Some(mask) = self.cpu.affinity {
            out.push_str("affinity = [");
            let mut first = true;
            for cpu in (0..MAX_CPUS).filter(|cpu| mask & (1 << cpu) != 0) {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write!(out, "{cpu}")?;
            }
            out.push_str("]\n");
        }
        if !self.cpu.coschedule {
            writeln!(out, "coschedule = \"off\"")?;
        }
        Ok(())
    }

    /// Checks every rule [`parse`] enforces, for a configuration that arrived some other
    /// way (errors carry no line).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |result: Result<(), ConfigErrorKind>| result.map_err(ConfigError::global);
        check(check_name(&self.name))?;
        check(check_range(
            "memory_mb",
            self.memory_mb.into(),
            1,
            MAX_MEMORY_MB.into(),
        ))?;
        check(check_range("vcpus", self.vcpus.into(), 1, MAX_VCPUS.into()))?;
        check(check_path("kernel", &self.kernel))?;
        if let Some(initrd) = &self.initrd {
            check(check_path("initrd", initrd))?;
        }
        check(check_no_nul("cmdline", &self.cmdline))?;
        check(check_range(
            "shares",
            self.cpu.shares.into(),
            1,
            MAX_SHARES.into(),
        ))?;
        if let Some(limit) = self.cpu.limit_mhz {
            check(check_range("limit_mhz", limit.into(), 1, u32::MAX.into()))?;
            if limit < self.cpu.reservation_mhz {
                return Err(ConfigError::global(
                    ConfigErrorKind::LimitBelowReservation {
                        limit,
                        reservation: self.cpu.reservation_mhz,
                    },
                ));
            }
        }
        if self.cpu.affinity == Some(0) {
            return Err(ConfigError::global(ConfigErrorKind::EmptyAffinity));
        }
        Ok(())
    }
}

/// A string written as a TOML basic string.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                c if is_toml_control(c) => write!(f, "\\u{:04X}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// Characters TOML strings may not hold unescaped: C0 controls other than tab, and DEL.
fn is_toml_control(c: char) -> bool {
    (c < ' ' && c != '\t') || c == '\u{7f}'
}

// --- Validation shared by the parser and `validate` ---

fn check_name(name: &str) -> Result<(), ConfigErrorKind> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ConfigErrorKind::InvalidName(name.to_string()))
    }
}

fn check_range(key: &'static str, got: i64, min: i64, max: i64) -> Result<(), ConfigErrorKind> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(ConfigErrorKind::OutOfRange { key, min, max, got })
    }
}

fn check_no_nul(key: &'static str, value: &str) -> Result<(), ConfigErrorKind> {
    if value.contains('\0') {
        Err(ConfigErrorKind::ContainsNul(key))
    } else {
        Ok(())
    }
}

fn check_path(key: &'static str, value: &str) -> Result<(), ConfigErrorKind> {
    if value.is_empty() {
        return Err(ConfigErrorKind::EmptyPath(key));
    }
    check_no_nul(key, value)
}

// --- The lexer ---

/// A value in the file.
#[derive(Debug)]
enum Value {
    Str(String),
    Int(i64),
    Array(Vec<i64>),
}

struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// 1-based line of the next character.
    line: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.text[self.pos..].chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn eat(&mut self, wanted: char) -> bool {
        self.skip_blanks();
        if self.peek() == Some(wanted) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn error(&self, message: &'static str) -> ConfigError {
        ConfigError::at(self.line, ConfigErrorKind::Syntax(message))
    }

    /// Skips spaces and tabs.
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// Skips a comment up to (not including) the end of the line.
    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            while !matches!(self.peek(), None | Some('\n' | '\r')) {
                self.bump();
            }
        }
    }

    /// Consumes a newline (LF or CR LF); false at anything else.
    fn newline(&mut self) -> Result<bool, ConfigError> {
        match self.peek() {
            Some('\n') => {
                self.bump();
                Ok(true)
            }
            Some('\r') if self.peek_second() == Some('\n') => {
                self.bump();
                self.bump();
                Ok(true)
            }
            Some('\r') => Err(self.error("carriage return without a line feed")),
            _ => Ok(false),
        }
    }

    /// After a value or header: blanks, an optional comment, then a newline or the end.
    fn end_of_line(&mut self) -> Result<(), ConfigError> {
        self.skip_blanks();
        self.skip_comment();
        if self.peek().is_none() || self.newline()? {
            Ok(())
        } else {
            Err(self.error("unexpected text after the value (one key = value per line)"))
        }
    }

    /// Blanks, comments and newlines (inside an array).
    fn skip_array_space(&mut self) -> Result<(), ConfigError> {
        loop {
            self.skip_blanks();
            self.skip_comment();
            if !self.newline()? {
                return Ok(());
            }
        }
    }

    /// A possibly dotted key: bare (`A-Za-z0-9_-`) or quoted parts separated by dots.
    fn key(&mut self) -> Result<Vec<String>, ConfigError> {
        let mut parts = Vec::new();
        loop {
            self.skip_blanks();
            let part = match self.peek() {
                Some('"') => self.basic_string()?,
                Some('\'') => self.literal_string()?,
                _ => {
                    let start = self.pos;
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        self.bump();
                    }
                    if start == self.pos {
                        return Err(self.error("expected a key"));
                    }
                    self.text[start..self.pos].to_string()
                }
            };
            parts.push(part);
            if !self.eat('.') {
                return Ok(parts);
            }
        }
    }

    fn value(&mut self) -> Result<Value, ConfigError> {
        match self.peek() {
            Some('"') => Ok(Value::Str(self.basic_string()?)),
            Some('\'') => Ok(Value::Str(self.literal_string()?)),
            Some('[') => {
                self.bump();
                self.array()
            }
            Some('{') => Err(self.error("inline tables are not supported")),
            _ => {
                let token = self.token();
                if token.is_empty() {
                    return Err(self.error("expected a value after \"=\""));
                }
                self.integer(token).map(Value::Int)
            }
        }
    }

    /// A run of characters up to a delimiter (for integers and unsupported values).
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while !matches!(
            self.peek(),
            None | Some(' ' | '\t' | '\n' | '\r' | '#' | ',' | ']')
        ) {
            self.bump();
        }
        &self.text[start..self.pos]
    }

    fn integer(&self, token: &str) -> Result<i64, ConfigError> {
        parse_integer(token).ok_or_else(|| {
            let kind = if token.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
                && !token.contains(['.', 'e', 'E', ':'])
                && !matches!(token, "+inf" | "-inf" | "+nan" | "-nan")
            {
                ConfigErrorKind::InvalidInteger(token.to_string())
            } else {
                ConfigErrorKind::UnsupportedValue(token.to_string())
            };
            ConfigError::at(self.line, kind)
        })
    }

    /// The rest of an array after its `[`.
    fn array(&mut self) -> Result<Value, ConfigError> {
        let mut items = Vec::new();
        loop {
            self.skip_array_space()?;
            match self.peek() {
                None => return Err(self.error("unterminated array (missing \"]\")")),
                Some(']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                Some('"' | '\'' | '[' | '{') => {
                    return Err(self.error("arrays may only hold integers"));
                }
                Some(',') => return Err(self.error("expected an integer before \",\"")),
                Some(_) => {
                    let token = self.token();
                    let value = self.integer(token)?;
                    items.push(value);
                }
            }
            self.skip_array_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {}
                None => return Err(self.error("unterminated array (missing \"]\")")),
                Some(_) => return Err(self.error("expected \",\" or \"]\" in the array")),
            }
        }
    }

    /// A `"basic string"` with escapes.
    fn basic_string(&mut self) -> Result<String, ConfigError> {
        self.bump();
        if self.peek() == Some('"') && self.peek_second() == Some('"') {
            return Err(self.error("multi-line strings are not supported"));
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => {
                    return Err(self.error("unterminated string (strings end on their line)"));
                }
                Some('"') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    let escaped = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape(4)?,
                        Some('U') => self.unicode_escape(8)?,
                        _ => return Err(self.error("unknown escape sequence in a string")),
                    };
                    out.push(escaped);
                }
                Some(c) if is_toml_control(c) => {
                    return Err(self.error("control characters in strings must be escaped"));
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    fn unicode_escape(&mut self, digits: usize) -> Result<char, ConfigError> {
        let start = self.pos;
        for _ in 0..digits {
            match self.peek() {
                Some(c) if c.is_ascii_hexdigit() => {
                    self.bump();
                }
                _ => return Err(self.error("\\u needs 4 and \\U 8 hexadecimal digits")),
            }
        }
        u32::from_str_radix(&self.text[start..self.pos], 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error("escape is not a Unicode scalar value"))
    }

    /// A `'literal string'` (no escapes).
    fn literal_string(&mut self) -> Result<String, ConfigError> {
        self.bump();
        if self.peek() == Some('\'') && self.peek_second() == Some('\'') {
            return Err(self.error("multi-line strings are not supported"));
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => {
                    return Err(self.error("unterminated string (strings end on their line)"));
                }
                Some('\'') => {
                    let value = self.text[start..self.pos].to_string();
                    self.bump();
                    return Ok(value);
                }
                Some(c) if is_toml_control(c) => {
                    return Err(self.error("control characters are not allowed in strings"));
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }
}

/// A TOML integer: optional sign, decimal without leading zeros, or `0x`/`0o`/`0b`
/// without sign; `_` only between digits.
fn parse_integer(token: &str) -> Option<i64> {
    let (negative, unsigned) = match token.as_bytes().first()? {
        b'+' => (false, &token[1..]),
        b'-' => (true, &token[1..]),
        _ => (false, token),
    };
    let signed = unsigned.len() != token.len();
    let (radix, digits) = match unsigned.get(..2) {
        Some("0x") if !signed => (16, &unsigned[2..]),
        Some("0o") if !signed => (8, &unsigned[2..]),
        Some("0b") if !signed => (2, &unsigned[2..]),
        _ => {
            if unsigned.len() > 1 && unsigned.starts_with('0') {
                return None;
            }
            (10, unsigned)
        }
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    if digits.contains("__") {
        return None;
    }
    let mut magnitude: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let digit = c.to_digit(radix)?;
        magnitude = magnitude
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

// --- From key/value pairs to a configuration ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shares {
    Number(u32),
    Level(SharesLevel),
}

/// Keys seen so far, each already checked on its own, with its line.
#[derive(Default)]
struct Builder {
    name: Option<(usize, String)>,
    memory_mb: Option<(usize, u32)>,
    vcpus: Option<(usize, u32)>,
    kernel: Option<(usize, String)>,
    initrd: Option<(usize, String)>,
    cmdline: Option<(usize, String)>,
    shares: Option<(usize, Shares)>,
    reservation_mhz: Option<(usize, u32)>,
    limit_mhz: Option<(usize, Option<u32>)>,
    affinity: Option<(usize, u64)>,
    coschedule: Option<(usize, bool)>,
    cpu_table_defined: bool,
}

/// Stores `value` in `slot` unless the key was seen before.
fn store<T>(
    slot: &mut Option<(usize, T)>,
    line: usize,
    key: &[String],
    value: T,
) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::at(
            line,
            ConfigErrorKind::DuplicateKey(key.join(".")),
        ));
    }
    *slot = Some((line, value));
    Ok(())
}

fn string(key: &'static str, value: Value) -> Result<String, ConfigErrorKind> {
    match value {
        Value::Str(s) => Ok(s),
        _ => Err(ConfigErrorKind::WrongType {
            key,
            expected: "a string",
        }),
    }
}

fn integer(key: &'static str, value: &Value, min: i64, max: i64) -> Result<u32, ConfigErrorKind> {
    match *value {
        Value::Int(n) => {
            check_range(key, n, min, max)?;
            // min and max are within u32 for every key.
            u32::try_from(n).map_err(|_| ConfigErrorKind::OutOfRange {
                key,
                min,
                max,
                got: n,
            })
        }
        _ => Err(ConfigErrorKind::WrongType {
            key,
            expected: "an integer",
        }),
    }
}

impl Builder {
    fn set(&mut self, line: usize, path: &[String], value: Value) -> Result<(), ConfigError> {
        let at = |kind| ConfigError::at(line, kind);
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        match keys.as_slice() {
            ["name"] => {
                let name = string("name", value).map_err(at)?;
                check_name(&name).map_err(at)?;
                store(&mut self.name, line, path, name)
            }
            ["memory_mb"] => {
                let mb = integer("memory_mb", &value, 1, MAX_MEMORY_MB.into()).map_err(at)?;
                store(&mut self.memory_mb, line, path, mb)
            }
            ["vcpus"] => {
                let vcpus = integer("vcpus", &value, 1, MAX_VCPUS.into()).map_err(at)?;
                store(&mut self.vcpus, line, path, vcpus)
            }
            ["kernel"] => {
                let kernel = string("kernel", value).map_err(at)?;
                check_path("kernel", &kernel).map_err(at)?;
                store(&mut self.kernel, line, path, kernel)
            }
            ["initrd"] => {
                let initrd = string("initrd", value).map_err(at)?;
                check_path("initrd", &initrd).map_err(at)?;
                store(&mut self.initrd, line, path, initrd)
            }
            ["cmdline"] => {
                let cmdline = string("cmdline", value).map_err(at)?;
                check_no_nul("cmdline", &cmdline).map_err(at)?;
                store(&mut self.cmdline, line, path, cmdline)
            }
            ["cpu"] => Err(at(ConfigErrorKind::WrongType {
                key: "cpu",
                expected: "a table ([cpu])",
            })),
            ["cpu", "shares"] => {
                let shares = match value {
                    Value::Str(level) => Shares::Level(
                        SharesLevel::from_name(&level)
                            .ok_or_else(|| at(ConfigErrorKind::InvalidShares(level)))?,
                    ),
                    value => {
                        Shares::Number(integer("shares", &value, 1, MAX_SHARES.into()).map_err(at)?)
                    }
                };
                store(&mut self.shares, line, path, shares)
            }
            ["cpu", "reservation_mhz"] => {
                let mhz = integer("reservation_mhz", &value, 0, u32::MAX.into()).map_err(at)?;
                store(&mut self.reservation_mhz, line, path, mhz)
            }
            ["cpu", "limit_mhz"] => {
                let limit = match value {
                    Value::Str(word) if word == "unlimited" => None,
                    Value::Str(word) => return Err(at(ConfigErrorKind::InvalidLimit(word))),
                    value => Some(integer("limit_mhz", &value, 1, u32::MAX.into()).map_err(at)?),
                };
                store(&mut self.limit_mhz, line, path, limit)
            }
            ["cpu", "affinity"] => {
                let Value::Array(cpus) = value else {
                    return Err(at(ConfigErrorKind::WrongType {
                        key: "affinity",
                        expected: "an array of CPU numbers",
                    }));
                };
                let mut mask = 0u64;
                for cpu in cpus {
                    let bit = u32::try_from(cpu)
                        .ok()
                        .filter(|&bit| bit < MAX_CPUS)
                        .ok_or_else(|| at(ConfigErrorKind::AffinityOutOfRange(cpu)))?;
                    if mask & (1 << bit) != 0 {
                        return Err(at(ConfigErrorKind::DuplicateAffinity(bit)));
                    }
                    mask |= 1 << bit;
                }
                if mask == 0 {
                    return Err(at(ConfigErrorKind::EmptyAffinity));
                }
                store(&mut self.affinity, line, path, mask)
            }
            ["cpu", "coschedule"] => {
                let on = match value {
                    Value::Str(word) if word == "relaxed" => true,
                    Value::Str(word) if word == "off" => false,
                    Value::Str(word) => return Err(at(ConfigErrorKind::InvalidCoschedule(word))),
                    _ => {
                        return Err(at(ConfigErrorKind::WrongType {
                            key: "coschedule",
                            expected: "\"relaxed\" or \"off\"",
                        }));
                    }
                };
                store(&mut self.coschedule, line, path, on)
            }
            _ => Err(at(ConfigErrorKind::UnknownKey(path.join(".")))),
        }
    }

    fn finish(self) -> Result<VmConfig, ConfigError> {
        let missing = |key| ConfigError::global(ConfigErrorKind::MissingKey(key));
        let name = self.name.ok_or_else(|| missing("name"))?.1;
        let memory_mb = self.memory_mb.ok_or_else(|| missing("memory_mb"))?.1;
        let kernel = self.kernel.ok_or_else(|| missing("kernel"))?.1;
        let vcpus = self.vcpus.map_or(1, |(_, vcpus)| vcpus);
        let shares = match self.shares {
            None => SharesLevel::Normal.per_vcpu() * vcpus,
            Some((_, Shares::Number(shares))) => shares,
            Some((_, Shares::Level(level))) => level.per_vcpu() * vcpus,
        };
        let reservation_mhz = self.reservation_mhz.map_or(0, |(_, mhz)| mhz);
        let limit_mhz = self.limit_mhz.and_then(|(_, limit)| limit);
        if let (Some(limit), Some((limit_line, _))) = (limit_mhz, self.limit_mhz)
            && limit < reservation_mhz
        {
            let reservation_line = self.reservation_mhz.map_or(0, |(line, _)| line);
            return Err(ConfigError::at(
                limit_line.max(reservation_line),
                ConfigErrorKind::LimitBelowReservation {
                    limit,
                    reservation: reservation_mhz,
                },
            ));
        }
        Ok(VmConfig {
            name,
            memory_mb,
            vcpus,
            kernel,
            initrd: self.initrd.map(|(_, initrd)| initrd),
            cmdline: self.cmdline.map(|(_, cmdline)| cmdline).unwrap_or_default(),
            cpu: CpuConfig {
                shares,
                reservation_mhz,
                limit_mhz,
                affinity: self.affinity.map(|(_, mask)| mask),
                coschedule: self.coschedule.is_none_or(|(_, on)| on),
            },
        })
    }
}

// --- serde for strings without serde's `alloc` feature ---

/// Serialises a `String` as a string and deserialises it from any string (serde's own
/// `String` impls need its `alloc` feature, which the bare-metal build leaves off).
mod text {
    use alloc::string::String;
    use core::fmt;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<String, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
                Ok(String::from(value))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// [`text`] for an `Option<String>`.
mod optional_text {
    use alloc::string::String;
    use core::fmt;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serialize, Serializer};

    struct Borrowed<'a>(&'a str);

    impl Serialize for Borrowed<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(self.0)
        }
    }

    pub(super) fn serialize<S: Serializer>(
        value: &Option<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(text) => serializer.serialize_some(&Borrowed(text)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        struct OptionalText;
        impl<'de> Visitor<'de> for OptionalText {
            type Value = Option<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an optional string")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                super::text::deserialize(deserializer).map(Some)
            }
        }
        deserializer.deserialize_option(OptionalText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use proptest::prelude::*;

    const FULL: &str = r#"
# A full configuration.
name = "web-1"          # trailing comment
memory_mb = 1_024
vcpus = 4
kernel = "/vms/web-1/vmlinuz"
initrd = '/vms/web-1/initrd.img'
cmdline = "console=ttyS0 root=\"/dev/vda\" \\ tab\there\n"

[cpu]
shares = "high"
reservation_mhz = 500
limit_mhz = 2_000
affinity = [
    0, 1,   # the first two
    63,
]
coschedule = "off"
"#;

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_key() {
        let config = parse(FULL).unwrap();
        assert_eq!(
            config,
            VmConfig {
                name: "web-1".into(),
                memory_mb: 1024,
                vcpus: 4,
                kernel: "/vms/web-1/vmlinuz".into(),
                initrd: Some("/vms/web-1/initrd.img".into()),
                cmdline: "console=ttyS0 root=\"/dev/vda\" \\ tab\there\n".into(),
                cpu: CpuConfig {
                    shares: 8000,
                    reservation_mhz: 500,
                    limit_mhz: Some(2000),
                    affinity: Some(1 | 2 | 1 << 63),
                    coschedule: false,
                },
            }
        );
        assert_eq!(config.memory_bytes(), 1 << 30);
        config.validate().unwrap();
    }

    #[test]
    fn defaults_fill_in() {
        let config = parse("name = \"a\"\nmemory_mb = 1\nkernel = 'k'").unwrap();
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.initrd, None);
        assert_eq!(config.cmdline, "");
        assert_eq!(config.cpu, CpuConfig::default_for(1));
        assert_eq!(config.cpu.shares, 1000);
        assert_eq!(config.cpu.limit_mhz, None);
        assert!(
            config.cpu.coschedule,
            "relaxed co-scheduling unless turned off"
        );
    }

    #[test]
    fn coschedule_is_relaxed_or_off() {
        let base = "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\n";
        let on = parse(&format!("{base}cpu.coschedule = \"relaxed\"")).unwrap();
        assert!(on.cpu.coschedule);
        assert!(!on.to_toml().contains("coschedule"));
        let off = parse(&format!("{base}cpu.coschedule = 'off'")).unwrap();
        assert!(!off.cpu.coschedule);
        assert_eq!(parse(&off.to_toml()).unwrap(), off);
        assert_eq!(
            error(&format!("{base}cpu.coschedule = \"strict\"")),
            "line 4: coschedule must be \"relaxed\" or \"off\", got \"strict\""
        );
        assert_eq!(
            error(&format!("{base}cpu.coschedule = 0")),
            "line 4: coschedule must be \"relaxed\" or \"off\""
        );
    }

    #[test]
    fn shares_levels_scale_with_vcpus_wherever_vcpus_is() {
        // The level comes before vcpus in the file: it is resolved at the end.
        let text = "cpu.shares = \"low\"\nname = \"a\"\nmemory_mb = 1\nkernel = 'k'\nvcpus = 3\n";
        assert_eq!(parse(text).unwrap().cpu.shares, 1500);
        let text = "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\nvcpus = 16\ncpu.shares = 'high'";
        assert_eq!(parse(text).unwrap().cpu.shares, 32000);
        let text = "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\nvcpus = 2\n[cpu]\nshares = 7";
        assert_eq!(parse(text).unwrap().cpu.shares, 7);
        let text = "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\nvcpus = 2\n";
        assert_eq!(parse(text).unwrap().cpu.shares, 2000);
    }

    #[test]
    fn dotted_and_quoted_keys_and_crlf() {
        let text = "name = \"a\"\r\nmemory_mb = 0x10\r\n\"kernel\" = 'k'\r\ncpu . limit_mhz = \"unlimited\"\r\ncpu.'affinity' = [5]\r\n";
        let config = parse(text).unwrap();
        assert_eq!(config.memory_mb, 16);
        assert_eq!(config.cpu.limit_mhz, None);
        assert_eq!(config.cpu.affinity, Some(1 << 5));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let base = "name = \"a\"\nkernel = 'k'\n";
        assert_eq!(
            error(&format!("{base}memory_mb = 0\n")),
            "line 3: memory_mb must be between 1 and 3072, got 0"
        );
        assert_eq!(
            error("name = \"a\"\nkernel = 'k'\nmemory_mb = 3073"),
            "line 3: memory_mb must be between 1 and 3072, got 3073"
        );
        assert_eq!(
            error("name = \"a\"\nkernel = 'k'\nmemory_mb = 1\n\nmemroy_mb = 5\n"),
            "line 5: unknown key \"memroy_mb\""
        );
        assert_eq!(
            error("name = \"a\"\nmemory_mb = 1"),
            "missing required key \"kernel\""
        );
        assert_eq!(
            error("kernel = 'k'\nmemory_mb = 1"),
            "missing required key \"name\""
        );
        assert_eq!(
            error("kernel = 'k'\nname = 'a'"),
            "missing required key \"memory_mb\""
        );
        assert_eq!(
            error("name = \"a\"\nname = \"b\"\n"),
            "line 2: duplicate key \"name\""
        );
        assert_eq!(
            error(
                "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\n[cpu]\nlimit_mhz = 100\nreservation_mhz = 200\n"
            ),
            "line 6: limit_mhz (100) is below reservation_mhz (200)"
        );
        assert_eq!(
            error(
                "name = \"a\"\nmemory_mb = 1\nkernel = 'k'\ncpu.reservation_mhz = 200\ncpu.limit_mhz = 100\n"
            ),
            "line 5: limit_mhz (100) is below reservation_mhz (200)"
        );
        assert_eq!(
            error("name = \"Web\""),
            "line 1: name \"Web\" must be 1-31 characters of a-z, 0-9 and '-', starting with a letter"
        );
        assert_eq!(error("name = \"1a\"").lines().count(), 1);
        assert!(error("name = \"1a\"").starts_with("line 1: name \"1a\""));
        assert!(error(&format!("name = \"{}\"", "a".repeat(32))).contains("must be 1-31"));
        assert!(
            parse(&format!(
                "name = \"{}\"\nmemory_mb = 1\nkernel = 'k'",
                "a".repeat(31)
            ))
            .is_ok()
        );
        assert_eq!(
            error("vcpus = 17"),
            "line 1: vcpus must be between 1 and 16, got 17"
        );
        assert_eq!(error("vcpus = \"2\""), "line 1: vcpus must be an integer");
        assert_eq!(error("name = 5"), "line 1: name must be a string");
        assert_eq!(error("kernel = ''"), "line 1: kernel must not be empty");
        assert_eq!(error("initrd = \"\""), "line 1: initrd must not be empty");
        assert_eq!(
            error("cmdline = \"a\\u0000b\""),
            "line 1: cmdline must not contain a NUL character"
        );
        assert_eq!(
            error("cpu.shares = \"medium\""),
            "line 1: shares must be 1-1000000 or \"low\", \"normal\" or \"high\", got \"medium\""
        );
        assert_eq!(
            error("cpu.shares = 0"),
            "line 1: shares must be between 1 and 1000000, got 0"
        );
        assert_eq!(
            error("[cpu]\nreservation_mhz = -1"),
            "line 2: reservation_mhz must be between 0 and 4294967295, got -1"
        );
        assert_eq!(
            error("[cpu]\nlimit_mhz = 0"),
            "line 2: limit_mhz must be between 1 and 4294967295, got 0"
        );
        assert_eq!(
            error("[cpu]\nlimit_mhz = 'none'"),
            "line 2: limit_mhz must be a number of MHz or \"unlimited\", got \"none\""
        );
        assert_eq!(
            error("[cpu]\naffinity = []"),
            "line 2: affinity must name at least one CPU"
        );
        assert_eq!(
            error("[cpu]\naffinity = [1, 64]"),
            "line 2: affinity names CPU 64; CPUs are numbered 0 to 63"
        );
        assert_eq!(
            error("[cpu]\naffinity = [3, 3]"),
            "line 2: affinity names CPU 3 twice"
        );
        assert_eq!(
            error("[cpu]\naffinity = 3"),
            "line 2: affinity must be an array of CPU numbers"
        );
        assert_eq!(
            error("[cpu]\nname = 'a'"),
            "line 2: unknown key \"cpu.name\""
        );
        assert_eq!(error("[net]"), "line 1: unknown table [net]");
        assert_eq!(
            error("[cpu]\n[cpu]"),
            "line 2: table [cpu] is defined twice"
        );
        assert_eq!(
            error("cpu.shares = 5\n[cpu]"),
            "line 2: table [cpu] is defined twice"
        );
        assert_eq!(error("cpu = 5"), "line 1: cpu must be a table ([cpu])");
        assert_eq!(
            error("[cpu]\nshares = 1\nshares = 2"),
            "line 3: duplicate key \"cpu.shares\""
        );
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, &str)] = &[
            ("name \"a\"", "line 1: expected \"=\" after the key"),
            ("= 5", "line 1: expected a key"),
            ("name =", "line 1: expected a value after \"=\""),
            (
                "name = \"a",
                "line 1: unterminated string (strings end on their line)",
            ),
            (
                "\n\nname = 'a\nb'",
                "line 3: unterminated string (strings end on their line)",
            ),
            (
                "name = \"a\\q\"",
                "line 1: unknown escape sequence in a string",
            ),
            (
                "name = \"a\\u12\"",
                "line 1: \\u needs 4 and \\U 8 hexadecimal digits",
            ),
            (
                "name = \"\\uD800\"",
                "line 1: escape is not a Unicode scalar value",
            ),
            (
                "name = \"\"\"a\"\"\"",
                "line 1: multi-line strings are not supported",
            ),
            (
                "name = \"a\" \"b\"",
                "line 1: unexpected text after the value (one key = value per line)",
            ),
            (
                "name = \"a\u{7}\"",
                "line 1: control characters in strings must be escaped",
            ),
            (
                "memory_mb = 01",
                "line 1: \"01\" is not a valid 64-bit integer",
            ),
            (
                "memory_mb = 1__0",
                "line 1: \"1__0\" is not a valid 64-bit integer",
            ),
            (
                "memory_mb = _1",
                "line 1: unsupported value \"_1\": expected a string, an integer or an array of integers",
            ),
            (
                "memory_mb = 1_",
                "line 1: \"1_\" is not a valid 64-bit integer",
            ),
            (
                "memory_mb = 9223372036854775808",
                "line 1: \"9223372036854775808\" is not a valid 64-bit integer",
            ),
            (
                "memory_mb = 1.5",
                "line 1: unsupported value \"1.5\": expected a string, an integer or an array of integers",
            ),
            (
                "memory_mb = true",
                "line 1: unsupported value \"true\": expected a string, an integer or an array of integers",
            ),
            (
                "memory_mb = -0x5",
                "line 1: \"-0x5\" is not a valid 64-bit integer",
            ),
            (
                "cpu.affinity = [1, 'a']",
                "line 1: arrays may only hold integers",
            ),
            (
                "cpu.affinity = [1 2]",
                "line 1: expected \",\" or \"]\" in the array",
            ),
            (
                "cpu.affinity = [,]",
                "line 1: expected an integer before \",\"",
            ),
            (
                "cpu.affinity = [1,\n2",
                "line 2: unterminated array (missing \"]\")",
            ),
            (
                "cpu = { shares = 1 }",
                "line 1: inline tables are not supported",
            ),
            (
                "[[cpu]]",
                "line 1: arrays of tables ([[...]]) are not supported",
            ),
            ("[cpu", "line 1: expected \"]\" after the table name"),
            (
                "name = 'a'\rmemory_mb = 1",
                "line 1: carriage return without a line feed",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error(text), *message, "for {text:?}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer("0"), Some(0));
        assert_eq!(parse_integer("-0"), Some(0));
        assert_eq!(parse_integer("+17"), Some(17));
        assert_eq!(parse_integer("1_000_000"), Some(1_000_000));
        assert_eq!(parse_integer("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_integer("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer("0xdead_BEEF"), Some(0xdead_beef));
        assert_eq!(parse_integer("0o17"), Some(0o17));
        assert_eq!(parse_integer("0b101"), Some(5));
        for bad in [
            "", "+", "-", "0x", "00", "+0x1", "0x_1", "1__2", "0b2", "0X1", "1a",
        ] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn to_toml_writes_readable_text() {
        let config = parse(FULL).unwrap();
        let text = config.to_toml();
        assert_eq!(
            text,
            "name = \"web-1\"\nmemory_mb = 1024\nvcpus = 4\nkernel = \"/vms/web-1/vmlinuz\"\n\
             initrd = \"/vms/web-1/initrd.img\"\n\
             cmdline = \"console=ttyS0 root=\\\"/dev/vda\\\" \\\\ tab\\there\\n\"\n\n[cpu]\n\
             shares = 8000\nreservation_mhz = 500\nlimit_mhz = 2000\naffinity = [0, 1, 63]\n\
             coschedule = \"off\"\n"
        );
        assert_eq!(parse(&text).unwrap(), config);
    }

    #[test]
    fn validate_refuses_what_parse_refuses() {
        let good = parse(FULL).unwrap();
        let mut bad = good.clone();
        bad.memory_mb = 0;
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "memory_mb must be between 1 and 3072, got 0"
        );
        let mut bad = good.clone();
        bad.cpu.limit_mhz = Some(1);
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "limit_mhz (1) is below reservation_mhz (500)"
        );
        let mut bad = good.clone();
        bad.cpu.affinity = Some(0);
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.name = "A".into();
        assert!(bad.validate().is_err());
        let mut bad = good;
        bad.kernel = "a\0b".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn travels_in_postcard() {
        let config = parse(FULL).unwrap();
        let mut buffer = [0u8; 512];
        let bytes = postcard::to_slice(&config, &mut buffer).unwrap();
        let back: VmConfig = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, config);
        let no_initrd = VmConfig {
            initrd: None,
            ..config
        };
        let bytes = postcard::to_slice(&no_initrd, &mut buffer).unwrap();
        assert_eq!(postcard::from_bytes::<VmConfig>(bytes).unwrap(), no_initrd);
    }

    fn any_config() -> impl Strategy<Value = VmConfig> {
        let text = "[^\u{0}]{0,40}";
        (
            "[a-z][a-z0-9-]{0,30}",
            1..=MAX_MEMORY_MB,
            1..=MAX_VCPUS,
            "[^\u{0}]{1,40}",
            proptest::option::of("[^\u{0}]{1,40}"),
            text,
            1..=MAX_SHARES,
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(1..=u64::MAX),
            any::<bool>(),
        )
            .prop_map(
                |(
                    name,
                    memory_mb,
                    vcpus,
                    kernel,
                    initrd,
                    cmdline,
                    shares,
                    reservation,
                    limit,
                    affinity,
                    coschedule,
                )| {
                    let limit_mhz = limit.map(|limit| limit.max(reservation).max(1));
                    VmConfig {
                        name,
                        memory_mb,
                        vcpus,
                        kernel,
                        initrd,
                        cmdline,
                        cpu: CpuConfig {
                            shares,
                            reservation_mhz: reservation,
                            limit_mhz,
                            affinity,
                            coschedule,
                        },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn to_toml_round_trips(config in any_config()) {
            prop_assert!(config.validate().is_ok());
            let text = config.to_toml();
            prop_assert_eq!(parse(&text), Ok(config));
        }

        #[test]
        fn any_text_parses_or_errors_without_panicking(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn mangled_files_never_panic(
            cut in 0..FULL.len(),
            insert in proptest::collection::vec(any::<char>(), 0..4),
            at in 0..FULL.len(),
        ) {
            let mut text: String = FULL.chars().take(cut).collect();
            let _ = parse(&text);
            let at = text.char_indices().map(|(i, _)| i).nth(at % (text.chars().count() + 1)).unwrap_or(text.len());
            for c in insert.iter().rev() {
                text.insert(at, *c);
            }
            let _ = parse(&text);
        }
    }

    #[test]
    fn every_line_ending_variant_and_empty_values() {
        assert!(parse("").is_err());
        assert!(parse("name = \"a\"\nmemory_mb = 1\nkernel = 'k'\ncmdline = ''").is_ok());
    }
}
