use thiserror::Error;

/// Errors of the warehouse, each naming the table or location it concerns.
#[derive(Debug, Error)]
pub enum WarehouseError {
    #[error("invalid warehouse location '{location}': {reason}")]
    Location { location: String, reason: String },
    #[error("table {table} at {url}: {source}")]
    Delta {
        table: String,
        url: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("table {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("table {table}: stored schema does not match the contract: {reason}")]
    Schema { table: String, reason: String },
    /// Another writer committed to the table after this change read it: nothing of this change
    /// was committed, and it can be made again against the new version.
    #[error("another writer committed to table {table} while this change was prepared")]
    Conflict { table: String },
}

impl WarehouseError {
    /// Whether the warehouse is set up wrong (its location, or a table that does not match the
    /// contract), as opposed to a store that failed: retrying will not help.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, Self::Location { .. } | Self::Schema { .. })
    }
}

/// Whether `e` itself (not its sources) is a failure of the storage: the object store or the
/// file system could not be reached, written or read. Walk an error's sources to find one.
pub fn is_storage_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<object_store::Error>() || e.is::<std::io::Error>()
}

/// Whether `e` says that another writer committed first (the commit was not made).
pub(crate) fn is_commit_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::DeltaTableError as D;
    use deltalake::kernel::transaction::TransactionError as T;
    matches!(
        e,
        D::VersionAlreadyExists(_)
            | D::Transaction {
                source: T::CommitConflict(_) | T::MaxCommitAttempts(_) | T::VersionAlreadyExists(_)
            }
    )
}

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;
