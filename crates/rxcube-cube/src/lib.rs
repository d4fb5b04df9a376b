//! The rxcube cube: every metric at every grain and org level, through one SQL catalog.
//!
//! In the flow **land → store → cube → rollups → serve**, this crate is *cube*. The cube is
//! declared in `cube.toml` ([`definition`]): additive components over the fact sources and
//! metrics as ratios of them or medians. [`udf`] adds the calendar functions (local time in the
//! pharmacy's zone, period starts with the pay-period anchor, a shift's spread over local
//! hours). [`provider::MetricsTable`] serves `cube.metrics`, planning only the slice each query
//! asks for ([`sql`]).

pub mod definition;
pub mod provider;
pub mod sql;
pub mod time;
pub mod udf;

use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

pub use definition::{CubeDef, DefinitionError};

/// Where a warehouse keeps its own cube definition, relative to its root.
pub const WAREHOUSE_DEFINITION: &str = "_rxcube/cube.toml";

/// The cube definition of `warehouse`: its `_rxcube/cube.toml` when it has one (local
/// warehouses), else the built-in definition.
pub fn definition_for(warehouse: &rxcube_warehouse::Warehouse) -> Result<CubeDef, DefinitionError> {
    if let Ok(root) = warehouse.root().to_file_path() {
        let path = root.join(WAREHOUSE_DEFINITION);
        if path.exists() {
            return CubeDef::load(&path);
        }
    }
    Ok(CubeDef::built_in())
}

/// The schema holding the cube's relations.
pub const CUBE_SCHEMA: &str = "cube";

/// A session over `warehouse` as every SQL surface sees it: the landed and system tables
/// ([`rxcube_warehouse::catalog`]) plus the cube of `def`.
pub async fn session(
    warehouse: &rxcube_warehouse::Warehouse,
    def: CubeDef,
) -> Result<SessionContext> {
    let ctx = rxcube_warehouse::catalog::new_session();
    rxcube_warehouse::catalog::register_tables(&ctx, warehouse)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    register(&ctx, Arc::new(def))?;
    Ok(ctx)
}

/// Registers the cube's functions and relations (`cube.metrics`) in `ctx`, whose default
/// catalog must already hold the landed tables.
pub fn register(ctx: &SessionContext, def: Arc<CubeDef>) -> Result<()> {
    udf::register(ctx);
    let catalog_name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let catalog = ctx
        .catalog(&catalog_name)
        .ok_or_else(|| DataFusionError::Plan(format!("catalog {catalog_name} is missing")))?;
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table(
        "metrics".to_string(),
        Arc::new(provider::MetricsTable::new(def)),
    )?;
    catalog.register_schema(CUBE_SCHEMA, schema)?;
    Ok(())
}
