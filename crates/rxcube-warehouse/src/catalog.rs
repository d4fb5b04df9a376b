//! The SQL catalog of landed tables: one DataFusion session over the warehouse.
//!
//! Contract tables are registered by their contract names in the default schema, as they stand
//! after every replacement; system tables (the import log) go in the `system` schema. A table
//! that has never been imported is registered empty with its contract schema, so queries over
//! a young warehouse still plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use rxcube_model::TableName;

use crate::system::SystemTable;
use crate::{Result, Warehouse, WarehouseError};

/// The catalog every rxcube session uses.
pub const CATALOG: &str = "rxcube";
/// The schema holding the contract tables.
pub const DEFAULT_SCHEMA: &str = "public";
/// The schema holding system tables (the import log).
pub const SYSTEM_SCHEMA: &str = "system";

/// A session configured as every rxcube SQL surface expects: the `rxcube` catalog with the
/// contract tables in `public`, and `information_schema` on.
pub fn new_session() -> SessionContext {
    SessionContext::new_with_config(session_config())
}

/// The configuration of [`new_session`], for sessions that add to it.
pub fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(true)
}

/// The version of each contract table a session reads (tables never imported are absent).
pub type Versions = BTreeMap<String, i64>;

/// Registers every contract table and system table of `warehouse` in `ctx`; returns the
/// versions of the contract tables registered.
pub async fn register_tables(ctx: &SessionContext, warehouse: &Warehouse) -> Result<Versions> {
    let versions = register_contract_tables(ctx, warehouse, TableName::ALL).await?;
    for system in SystemTable::ALL {
        let provider = match warehouse.load_named(system.location()).await? {
            Some(delta) => delta_provider(ctx, system.name(), &delta).await?,
            None => empty(system.name(), system.schema())?,
        };
        register(ctx, SYSTEM_SCHEMA, system.name(), provider)?;
    }
    Ok(versions)
}

/// Registers the contract tables `tables` of `warehouse` in `ctx` (an empty one for a table
/// never imported); returns the versions of those registered from the warehouse. Loading a
/// table replays its log, so a job registers only the tables it reads.
pub async fn register_contract_tables(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    tables: impl IntoIterator<Item = TableName>,
) -> Result<Versions> {
    let mut versions = Versions::new();
    for table in tables {
        let def = table.def();
        let provider = match warehouse.load(def).await? {
            Some(delta) => {
                if let Some(v) = delta.version() {
                    versions.insert(def.name.to_string(), v as i64);
                }
                delta_provider(ctx, def.name, &delta).await?
            }
            None => empty(def.name, def.stored_schema())?,
        };
        register(ctx, DEFAULT_SCHEMA, def.name, provider)?;
    }
    Ok(versions)
}

/// Registers the Delta table stored at `location` (relative to the root) as `schema.name`, at
/// `version` (default: the latest); returns its version, or `None` (registering nothing) when
/// it does not exist.
pub async fn register_named(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    schema: &str,
    name: &str,
    location: &str,
    version: Option<i64>,
) -> Result<Option<i64>> {
    let Some(mut delta) = warehouse.load_named(location).await? else {
        return Ok(None);
    };
    if let Some(v) = version {
        delta
            .load_version(v as u64)
            .await
            .map_err(|source| WarehouseError::Delta {
                table: location.to_string(),
                url: warehouse.table_url(location).to_string(),
                source,
            })?;
    }
    register_delta(ctx, schema, name, &delta).await?;
    Ok(delta.version().map(|v| v as i64))
}

/// Registers a loaded Delta table, at the version it is loaded at, as `schema.name`.
pub async fn register_delta(
    ctx: &SessionContext,
    schema: &str,
    name: &str,
    delta: &deltalake::DeltaTable,
) -> Result<()> {
    let provider = delta_provider(ctx, name, delta).await?;
    register(ctx, schema, name, provider)
}

async fn delta_provider(
    ctx: &SessionContext,
    name: &str,
    delta: &deltalake::DeltaTable,
) -> Result<Arc<dyn TableProvider>> {
    let err = |e: deltalake::DeltaTableError| WarehouseError::Query {
        table: name.to_string(),
        source: DataFusionError::External(Box::new(e)),
    };
    delta.update_datafusion_session(&ctx.state()).map_err(err)?;
    delta
        .table_provider()
        .await
        .map_err(|source| WarehouseError::Query {
            table: name.to_string(),
            source,
        })
}

fn empty(name: &str, schema: arrow::datatypes::SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let table =
        MemTable::try_new(schema, vec![vec![]]).map_err(|source| WarehouseError::Query {
            table: name.to_string(),
            source,
        })?;
    Ok(Arc::new(table))
}

fn register(
    ctx: &SessionContext,
    schema: &str,
    name: &str,
    provider: Arc<dyn TableProvider>,
) -> Result<()> {
    let err = |source| WarehouseError::Query {
        table: name.to_string(),
        source,
    };
    let catalog = ctx.catalog(CATALOG).ok_or_else(|| {
        err(DataFusionError::Plan(format!(
            "catalog {CATALOG} is missing"
        )))
    })?;
    let schema_provider = match catalog.schema(schema) {
        Some(s) => s,
        None => {
            let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog
                .register_schema(schema, Arc::clone(&s))
                .map_err(err)?;
            s
        }
    };
    // Registering again (a newer version) replaces the table.
    schema_provider.deregister_table(name).map_err(err)?;
    schema_provider
        .register_table(name.to_string(), provider)
        .map_err(err)?;
    Ok(())
}
