use std::fmt;

use rxcube_warehouse::WarehouseError;
use thiserror::Error;

/// One problem with one record (or with a whole file when `record` is `None`): what was wrong
/// and where, as the user must be told.
///
/// The fields hold the text exactly as read (a value is only shortened past 80 characters), and
/// so does `system.import_errors`; the one-line [`Display`](fmt::Display) form escapes what a
/// terminal would act on instead of showing ([`escape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub file: String,
    /// 1-based number of the data record (the CSV header is not a record).
    pub record: Option<u64>,
    pub column: Option<String>,
    pub value: Option<String>,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escape(&self.file))?;
        if let Some(r) = self.record {
            write!(f, ": record {r}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {}", escape(c))?;
        }
        if let Some(v) = &self.value {
            write!(f, ", value '{}'", escape_value(v))?;
        }
        write!(f, ": {}", escape(&self.reason))
    }
}

/// `text` with the characters a terminal acts on instead of showing escaped as in Rust string
/// literals: control characters (`\0`, `\t`, `\n`, `\r`, others as `\u{1b}`) and the
/// bidirectional overrides and isolates, which reorder what follows them (`\u{202e}`). An
/// error message stays on one line and shows what the file holds.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, false)
}

/// A value for an error line: [`escape`]d, and its backslashes doubled, so that a value that
/// holds the two characters `\n` prints differently from one that holds a line break.
pub fn escape_value(value: &str) -> std::borrow::Cow<'_, str> {
    escape_with(value, true)
}

fn escape_with(text: &str, backslash: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            || (backslash && c == '\\')
    };
    if !text.chars().any(special) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if !special(c) => out.push(c),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            _ => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Failures that stop an import before it can judge the records.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("{0}")]
    Usage(String),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error in {context}: {source}")]
    Internal {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("import into {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// Pass 2 lost the race to commit to other imports ([`crate::ImportOptions::posting_attempts`]
    /// times): nothing of the run was posted; it is logged as failed.
    #[error(
        "another import committed to table {table} while this one ran; nothing of this run was \
         posted; run it again (run {run_id} is logged as failed)"
    )]
    Conflict { table: String, run_id: String },
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Longest value quoted back in an error message.
const MAX_VALUE_CHARS: usize = 80;

/// Quotes a value for an error message, shortened if long.
pub(crate) fn quote(value: &str) -> String {
    if value.chars().count() <= MAX_VALUE_CHARS {
        value.to_string()
    } else {
        let mut s: String = value.chars().take(MAX_VALUE_CHARS).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_text_escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("plain é 東 C:\\in"), "plain é 東 C:\\in");
        assert_eq!(
            escape("a\0b\nc\rd\te\u{1b}[31m\u{7f}"),
            r"a\0b\nc\rd\te\u{1b}[31m\u{7f}"
        );
        assert_eq!(escape("x\u{202e}y\u{2066}"), r"x\u{202e}y\u{2066}");
        assert_eq!(escape_value("a\\nb\nc"), r"a\\nb\nc");
        let e = RecordError {
            file: "f.csv".into(),
            record: Some(2),
            column: Some("channel".into()),
            value: Some("lo\0cal\nx".into()),
            reason: "must be one of local, crp".into(),
        };
        assert_eq!(
            e.to_string(),
            r"f.csv: record 2, column channel, value 'lo\0cal\nx': must be one of local, crp"
        );
    }
}
