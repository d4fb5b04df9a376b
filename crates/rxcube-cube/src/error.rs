//! The cube's own errors, and the kind of failure behind any error of a cube statement: what
//! tells a statement the caller can fix from a store that is down, a server set up wrong or a
//! bug. The server maps each kind to its gRPC status.

use std::error::Error;

use datafusion::error::DataFusionError;
use rxcube_warehouse::WarehouseError;

use crate::definition::DefinitionError;

/// An error raised by the cube, carried through DataFusion as
/// [`DataFusionError::External`] (see [`kind_of`]).
#[derive(Debug, thiserror::Error)]
pub enum CubeError {
    /// The cube definition is wrong; it names the file, the entry and the field.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The warehouse's tables, log or rollups could not be read.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

impl From<CubeError> for DataFusionError {
    fn from(e: CubeError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The statement is wrong (syntax, names, types, a value it computes): the caller can fix
    /// it.
    Invalid,
    /// The store could not be reached, written or read: worth retrying.
    Unavailable,
    /// The statement ran out of memory or spill space under the limits.
    ResourcesExhausted,
    /// The server is set up wrong (its cube definition or warehouse): the operator must fix it.
    Misconfigured,
    /// Anything else: a bug.
    Internal,
}

/// The kind of `e`: a storage failure or a cube error anywhere in its chain of sources decides
/// it; else the DataFusion error at its root.
pub fn kind_of(e: &DataFusionError) -> ErrorKind {
    if let DataFusionError::ResourcesExhausted(_) = e.find_root() {
        return ErrorKind::ResourcesExhausted;
    }
    let mut at: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = at {
        let warehouse = match err.downcast_ref::<CubeError>() {
            Some(CubeError::Definition(_)) => return ErrorKind::Misconfigured,
            Some(CubeError::Warehouse(w)) => Some(w),
            None => err.downcast_ref::<WarehouseError>(),
        };
        match warehouse {
            Some(w) if w.is_misconfiguration() => return ErrorKind::Misconfigured,
            Some(WarehouseError::Conflict { .. }) => return ErrorKind::Unavailable,
            _ => {}
        }
        if err.is::<DefinitionError>() {
            return ErrorKind::Misconfigured;
        }
        if rxcube_warehouse::is_storage_error(err) {
            return ErrorKind::Unavailable;
        }
        at = err.source();
    }
    match e.find_root() {
        DataFusionError::Internal(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::External(_)
        | DataFusionError::Shared(_) => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn outage() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "error sending request: connection refused".into(),
        }
    }

    #[test]
    fn a_store_that_is_down_is_unavailable_however_deep() {
        let direct = DataFusionError::ObjectStore(Box::new(outage()));
        assert_eq!(kind_of(&direct), ErrorKind::Unavailable);
        let in_parquet = DataFusionError::ParquetError(Box::new(
            datafusion::parquet::errors::ParquetError::External(Box::new(outage())),
        ));
        assert_eq!(kind_of(&in_parquet), ErrorKind::Unavailable);
        let in_delta =
            DataFusionError::External(Box::new(CubeError::Warehouse(WarehouseError::Delta {
                table: "rx_fills".into(),
                url: "s3://chain/w/rx_fills".into(),
                source: deltalake::DeltaTableError::ObjectStore { source: outage() },
            })));
        assert_eq!(kind_of(&in_delta), ErrorKind::Unavailable);
        let shared = DataFusionError::Context(
            "reading rx_fills".into(),
            Box::new(DataFusionError::Shared(Arc::new(DataFusionError::IoError(
                std::io::Error::other("disk gone"),
            )))),
        );
        assert_eq!(kind_of(&shared), ErrorKind::Unavailable);
    }

    #[test]
    fn a_bad_statement_is_invalid_and_a_bug_internal() {
        let parse = DataFusionError::SQL(
            Box::new(
                datafusion::sql::sqlparser::parser::ParserError::ParserError(
                    "Expected: an expression".into(),
                ),
            ),
            None,
        );
        assert_eq!(kind_of(&parse), ErrorKind::Invalid);
        let plan = DataFusionError::Context(
            "planning".into(),
            Box::new(DataFusionError::Plan("table 'nope' not found".into())),
        );
        assert_eq!(kind_of(&plan), ErrorKind::Invalid);
        let cast = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::CastError(
                "'x' is not a number".into(),
            )),
            None,
        );
        assert_eq!(kind_of(&cast), ErrorKind::Invalid);
        assert_eq!(
            kind_of(&DataFusionError::Internal("oops".into())),
            ErrorKind::Internal
        );
        assert_eq!(
            kind_of(&DataFusionError::ResourcesExhausted("the pool".into())),
            ErrorKind::ResourcesExhausted
        );
    }

    #[test]
    fn a_wrong_definition_or_location_is_the_operators_to_fix() {
        let def = DataFusionError::from(CubeError::Definition(DefinitionError {
            origin: "w/_rxcube/cube.toml".into(),
            reason: "component 'x': ...".into(),
        }));
        assert_eq!(kind_of(&def), ErrorKind::Misconfigured);
        let location = DataFusionError::External(Box::new(WarehouseError::Location {
            location: "s4://x".into(),
            reason: "unknown scheme".into(),
        }));
        assert_eq!(kind_of(&location), ErrorKind::Misconfigured);
    }
}
