//! Diagnostics: one problem in an input file, located by line.
//!
//! Every message names the file and line and, in its text, the declaration it is about
//! (`system.toml:14: channel "auth": server "vmkauthdd" is not a declared world`). This
//! module owns only the type and the byte-offset-to-line arithmetic; it never decides what
//! is wrong.

use std::fmt;
use std::ops::Range;

/// One problem found in an input file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line number (0: about the whole file, e.g. it cannot be read).
    pub line: usize,
    /// What is wrong, naming the declaration.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// An input text and its name, able to turn byte spans into line numbers.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name used in diagnostics.
    pub file: &'a str,
    /// The whole text.
    pub text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset (clamped to the text).
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The line where `span` starts.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.line_of(span.start)
    }
}

/// Collects diagnostics for one source.
#[derive(Debug)]
pub struct Diagnostics<'a> {
    source: Source<'a>,
    list: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    /// An empty collection for `source`.
    pub fn new(source: Source<'a>) -> Self {
        Self {
            source,
            list: Vec::new(),
        }
    }

    /// The source being checked.
    pub fn source(&self) -> Source<'a> {
        self.source
    }

    /// Records a problem at a byte span.
    pub fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let line = self.source.line(span);
        self.error_at_line(line, message);
    }

    /// Records a problem at a line.
    pub fn error_at_line(&mut self, line: usize, message: impl Into<String>) {
        self.list.push(Diagnostic {
            file: self.source.file.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// How many problems were recorded so far.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The diagnostics, sorted by line (stable, so same-line ones keep their order).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| d.line);
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let source = Source {
            file: "x.toml",
            text: "a\nb\n\nc",
        };
        assert_eq!(source.line_of(0), 1);
        assert_eq!(source.line_of(2), 2);
        assert_eq!(source.line_of(5), 4);
        assert_eq!(source.line_of(999), 4);
    }
}
