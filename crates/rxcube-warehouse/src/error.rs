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
}

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;
