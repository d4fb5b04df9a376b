//! The rxcube data model: the input contract as data ([`docs`] renders it into
//! `docs/contract.md`).
//!
//! Everything downstream reads this crate rather than restating it: the generator writes files
//! in these shapes, the import utility validates against these rules, the warehouse lays the
//! tables out as [`TableDef`] says, and the cube reads the columns by these names.
//!
//! The flow of the whole system is **land → store → cube → rollups → serve**; this crate is the
//! vocabulary shared by every stage and has no I/O of its own (beyond
//! [`docs::sync_section`], which keeps the documentation page in step).

pub mod contract;
pub mod docs;
pub mod domain;

pub use contract::{Check, ColumnDef, ColumnType, Reference, TableDef, TableName};
