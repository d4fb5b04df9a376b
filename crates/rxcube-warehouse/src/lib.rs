//! The rxcube warehouse: where landed tables live and how they change.
//!
//! A warehouse is a root URL (a local directory by default, or any object_store URL). Every
//! contract table is a Delta Lake table under it (`<root>/<table>`), so each change is one atomic
//! commit to the table's log: readers see the previous version or the next one, never a mix, and
//! a killed writer leaves only unreferenced files behind. System tables (the import log) live
//! under `<root>/_rxcube/`.
//!
//! In the flow **land → store → cube → rollups → serve**, this crate is *store*: the import
//! utility hands it validated records ([`Warehouse::upsert`]), and every SQL surface reads the
//! tables through [`catalog::register_tables`].

// Errors carry deltalake's and DataFusion's errors whole; they arise on I/O-bound cold paths,
// where the size of a Result does not matter.
#![allow(clippy::result_large_err)]

pub mod catalog;
mod changes;
mod error;
pub mod layout;
mod location;
pub mod maintenance;
pub mod runs;
pub mod stores;
pub mod system;
mod upsert;

pub use changes::FileChange;
pub use error::{Result, WarehouseError, is_storage_error};
pub use location::Warehouse;
pub use upsert::{Hook, UpsertOutcome, UpsertRequest};
