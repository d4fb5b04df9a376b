//! Errors of the generator: a configuration it cannot honour, and I/O, Arrow or Parquet
//! failures, each naming the file or directory it hit.

use std::io;
use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The configuration is out of range; the message says which field and why.
    #[error("invalid generator configuration: {0}")]
    Config(String),
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build an Arrow batch for {}: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: ArrowError,
    },
    #[error("cannot write Parquet file {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
}
