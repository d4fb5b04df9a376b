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
//!
//! It is also *rollups*: [`rollup`] materializes mergeable partial states ([`hist`] for exact
//! medians) as Delta tables, keeps them fresh from the Delta log, and picks, per query, the
//! coarsest fresh rollup that answers it exactly ([`rollup::Rollups::choose`]); the generated
//! SQL then reads the rollup instead of the facts ([`sql::metrics_sql`]). Results are cached per
//! snapshot ([`cache`]). `EXPLAIN` and each result's schema metadata ([`SERVED_BY_KEY`]) say
//! what served a query.

pub mod cache;
pub mod definition;
pub mod docs;
pub mod error;
pub mod hist;
pub mod metrics;
pub mod relation;
pub mod rollup;
pub mod sql;
pub mod time;
pub mod udf;
pub mod views;

use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::config::ConfigExtension;
use datafusion::common::{DataFusionError, Result, extensions_options};
use datafusion::prelude::SessionContext;

pub use definition::{CubeDef, DefinitionError, LEVELS};
pub use error::{CubeError, ErrorKind, kind_of};
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

extensions_options! {
    /// rxcube's session settings (`SET rxcube.<name> = ...`).
    pub struct CubeOptions {
        /// Answer cube queries from fresh rollups when one answers exactly; `false` forces
        /// the raw tables (for checking, or timing the raw path).
        pub rollups: bool, default = true
        /// Reuse results computed for the same snapshot ([`cache`]); `false` recomputes
        /// every query (for timing the engine).
        pub result_cache: bool, default = true
        /// Protect small cells (`[[small_cells]]` of the cube definition): their figures are
        /// NULL and take no part in peer averages and ranks. User sessions whose scope does
        /// not see employee data have it on, whatever they set.
        pub small_cells: bool, default = false
        /// The result cache's partition: results are reused only within the same one. User
        /// sessions are partitioned by scope, so what is cached, and how fast it answers,
        /// tells no one what users of other scopes ran.
        pub cache_partition: String, default = String::new()
    }
}

impl ConfigExtension for CubeOptions {
    const PREFIX: &'static str = "rxcube";
}

/// An empty session with rxcube's configuration and the cube's functions (no tables).
pub fn base_session() -> SessionContext {
    base_session_in(Arc::default())
}

/// [`base_session`] on `runtime` (its memory pool, spill directory and object stores).
pub fn base_session_in(
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> SessionContext {
    let config =
        rxcube_warehouse::catalog::session_config().with_option_extension(CubeOptions::default());
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    udf::register(&ctx);
    hist::register(&ctx);
    ctx
}

/// A session over `warehouse` as every SQL surface sees it: the landed and system tables
/// ([`rxcube_warehouse::catalog`]), the rollups of `def` (schema `rollups`) and its cube.
pub async fn session(
    warehouse: &rxcube_warehouse::Warehouse,
    def: CubeDef,
) -> Result<SessionContext> {
    Ok(session_with_rollups(warehouse, def).await?.0)
}

/// [`session`], with the rollups it reads and judged fresh or stale (also readable as
/// `system.rollups`).
pub async fn session_with_rollups(
    warehouse: &rxcube_warehouse::Warehouse,
    def: CubeDef,
) -> Result<(SessionContext, Arc<rollup::Rollups>)> {
    let ctx = base_session();
    let versions = rxcube_warehouse::catalog::register_tables(&ctx, warehouse)
        .await
        .map_err(CubeError::from)?;
    let rollups = Arc::new(rollup::Rollups::load(&ctx, warehouse, &def, &versions).await?);
    let status = rollups.status_table(&ctx)?;
    ctx.register_table(
        datafusion::common::TableReference::partial(
            rxcube_warehouse::catalog::SYSTEM_SCHEMA,
            rollup::STATUS_TABLE,
        ),
        status,
    )?;
    register(&ctx, Arc::new(def), rollups.clone())?;
    Ok((ctx, rollups))
}

/// The default catalog of `ctx`, where the landed tables, the rollups and the cube live, and
/// its name.
pub fn default_catalog(
    ctx: &SessionContext,
) -> Result<(String, Arc<dyn datafusion::catalog::CatalogProvider>)> {
    let name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let catalog = ctx
        .catalog(&name)
        .ok_or_else(|| DataFusionError::Plan(format!("catalog {name} is missing")))?;
    Ok((name, catalog))
}

/// Registers the cube's relations (`cube.metrics` and the analyst relations of [`views`]) in
/// `ctx`, a [`base_session`] whose default catalog already holds the landed tables, with the
/// rollups it may answer from.
pub fn register(
    ctx: &SessionContext,
    def: Arc<CubeDef>,
    rollups: Arc<rollup::Rollups>,
) -> Result<()> {
    let (_, catalog) = default_catalog(ctx)?;
    let schema = Arc::new(MemorySchemaProvider::new());
    for (name, table) in relations(def, rollups) {
        schema.register_table(name, table)?;
    }
    catalog.register_schema(CUBE_SCHEMA, schema)?;
    Ok(())
}

/// Every relation of the cube schema, by name. The diagnostics and the budget read metrics of
/// the built-in definition; a definition without them goes without those relations.
pub fn relations(
    def: Arc<CubeDef>,
    rollups: Arc<rollup::Rollups>,
) -> Vec<(String, Arc<dyn TableProvider>)> {
    fn table<R: Relation>(name: &str, r: R) -> (String, Arc<dyn TableProvider>) {
        (
            name.to_string(),
            Arc::new(CubeTable::new(format!("{CUBE_SCHEMA}.{name}"), r)),
        )
    }
    let has = |names: &[&str]| names.iter().all(|n| def.lookup(n).is_some());
    // The views read the same snapshot as cube.metrics: their results are cached with it.
    let snapshot = rollups.snapshot.clone();
    let mut out = vec![
        table("metrics", metrics::MetricsTable::new(def.clone(), rollups)),
        table(
            "metric_definitions",
            views::MetricDefinitions::new(def.clone()),
        ),
        table("rankings", views::View::rankings(&def).reading(&snapshot)),
        table(
            "attainment",
            views::View::attainment(&def).reading(&snapshot),
        ),
        table("alerts", views::View::alerts(&def).reading(&snapshot)),
    ];
    if has(&views::View::VOLUME_METRICS) {
        out.push(table("volume", views::View::volume().reading(&snapshot)));
    }
    if has(&views::View::TREND_METRICS) {
        out.push(table(
            "weekly_trend",
            views::View::weekly_trend().reading(&snapshot),
        ));
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

/// The metadata key under which a result's schema says what served its cube relations: one
/// line per relation, `<relation>: rollup <name> (version, built, from table@version ...)` or
/// `<relation>: raw tables (why no rollup)`.
pub const SERVED_BY_KEY: &str = "rxcube.served_by";

/// Runs one statement in `ctx`; the batches' schema carries [`SERVED_BY_KEY`] when a cube
/// relation was read. Also returns those lines.
pub async fn run_statement(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(Vec<arrow::array::RecordBatch>, Vec<String>)> {
    let df = ctx.sql(sql).await?;
    let plan = df.create_physical_plan().await?;
    let served = relation::served_by(&plan);
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
    if served.is_empty() {
        return Ok((batches, served));
    }
    let batches = batches
        .into_iter()
        .map(|b| {
            let mut metadata = b.schema().metadata().clone();
            metadata.insert(SERVED_BY_KEY.to_string(), served.join("\n"));
            let schema = Arc::new(b.schema().as_ref().clone().with_metadata(metadata));
            b.with_schema(schema)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((batches, served))
}
