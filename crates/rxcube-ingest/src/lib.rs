//! The rxcube import utility: lands CSV and Parquet files in the warehouse as the original
//! system's users expect (domain.md, "The import utility").
//!
//! In the flow **land → store → cube → rollups → serve**, this crate is *land*: [`import()`]
//! reads files ([`source`]), checks every record against the contract ([`rules`]), and only if
//! every record is right posts them all in one commit through the warehouse.

// Errors wrap deltalake's and DataFusion's whole, on cold paths.
#![allow(clippy::result_large_err)]

mod blocks;
mod budget;
mod columns;
mod error;
pub mod follow;
mod import;
mod keys;
mod parquet_check;
pub mod rules;
mod source;
mod spool;
pub mod text;

pub use budget::{DEFAULT_MEMORY_LIMIT, MIN_MEMORY_LIMIT};
pub use error::{IngestError, RecordError, Result, escape, escape_value};
pub use import::{
    ImportOptions, ImportReport, NoProgress, POSTING_ATTEMPTS, Pause, Progress, Status, import,
};
