use std::fmt;

use rxcube_warehouse::WarehouseError;
use thiserror::Error;

/// One problem with one record (or with a whole file when `record` is `None`): what was wrong
/// and where, as the user must be told.
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
        write!(f, "{}", self.file)?;
        if let Some(r) = self.record {
            write!(f, ": record {r}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {c}")?;
        }
        if let Some(v) = &self.value {
            write!(f, ", value '{v}'")?;
        }
        write!(f, ": {}", self.reason)
    }
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
