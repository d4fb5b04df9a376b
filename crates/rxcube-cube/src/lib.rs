//! The rxcube cube: every metric at every grain and org level, through one SQL catalog.
//!
//! In the flow **land → store → cube → rollups → serve**, this crate is *cube*. The cube is
//! declared in `cube.toml` ([`definition`]): additive components over the fact sources and
//! metrics as ratios of them or medians. [`udf`] adds the calendar functions (local time in the
//! pharmacy's zone, period starts with the pay-period anchor, a shift's spread over local
//! hours). [`metrics::MetricsTable`] serves `cube.metrics`, planning only the slice each query
//! asks for ([`sql`]); [`views`] adds the analyst relations over it (wide views, rankings,
//! target attainment, diagnostics, the budget estimator). Every relation is SQL generated per
//! query and served by one table provider ([`relation::CubeTable`]), documented in the catalog.

pub mod definition;
pub mod metrics;
pub mod relation;
pub mod sql;
pub mod time;
pub mod udf;
pub mod views;

use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

pub use definition::{CubeDef, DefinitionError, LEVELS};
use relation::{CubeTable, Relation};
use time::Grain;

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

/// Registers the cube's functions and relations (`cube.metrics` and the analyst relations of
/// [`views`]) in `ctx`, whose default catalog must already hold the landed tables.
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
    for (name, table) in relations(def) {
        schema.register_table(name, table)?;
    }
    catalog.register_schema(CUBE_SCHEMA, schema)?;
    Ok(())
}

/// Every relation of the cube schema, by name. The diagnostics and the budget read metrics of
/// the built-in definition; a definition without them goes without those relations.
pub fn relations(def: Arc<CubeDef>) -> Vec<(String, Arc<dyn TableProvider>)> {
    fn table<R: Relation>(name: &str, r: R) -> (String, Arc<dyn TableProvider>) {
        (
            name.to_string(),
            Arc::new(CubeTable::new(format!("{CUBE_SCHEMA}.{name}"), r)),
        )
    }
    let has = |names: &[&str]| names.iter().all(|n| def.lookup(n).is_some());
    let mut out = vec![
        table("metrics", metrics::MetricsTable::new(def.clone())),
        table(
            "metric_definitions",
            views::MetricDefinitions::new(def.clone()),
        ),
        table("rankings", views::View::rankings(&def)),
        table("attainment", views::View::attainment(&def)),
    ];
    if has(&views::View::VOLUME_METRICS) {
        out.push(table("volume", views::View::volume()));
    }
    if has(&views::View::TREND_METRICS) {
        out.push(table("weekly_trend", views::View::weekly_trend()));
    }
    if has(&views::Budget::METRICS) {
        out.push(table("budget", views::Budget::default()));
    }
    for level in LEVELS {
        for grain in Grain::ALL {
            out.push(table(
                &views::Wide::name(level, grain),
                views::Wide::new(&def, level, grain),
            ));
        }
    }
    out
}
