//! Who may see what in an rxcube warehouse.
//!
//! - [`directory`]: users, groups and privileges (argon2 password hashes), one JSON document
//!   in the warehouse, managed by `rxcube users`.
//! - [`scope`]: org scopes (`level:node`) and what they reach in the org.
//! - [`session`]: a user's session, where every relation is the home relation filtered to the
//!   scope and masked, inside the plan.
//! - [`audit`]: the audit log (`system.audit_log`).
//! - [`Access`]: the home session and org of one snapshot of the warehouse, which the server
//!   builds user sessions from.

pub mod audit;
pub mod directory;
pub mod scope;
pub mod session;

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use rxcube_warehouse::Warehouse;

pub use directory::{Directory, Principal, Privilege, Refusal, Stored};
pub use scope::{Level, OrgIndex, Reach, Scope};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Warehouse(Box<rxcube_warehouse::WarehouseError>),
    #[error(transparent)]
    Query(Box<DataFusionError>),
}

impl From<rxcube_warehouse::WarehouseError> for AccessError {
    fn from(e: rxcube_warehouse::WarehouseError) -> Self {
        AccessError::Warehouse(Box::new(e))
    }
}

impl From<DataFusionError> for AccessError {
    fn from(e: DataFusionError) -> Self {
        AccessError::Query(Box::new(e))
    }
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;

/// The store of the access documents of `warehouse`.
pub fn store(warehouse: &Warehouse) -> Result<deltalake::logstore::ObjectStoreRef> {
    Ok(warehouse.store(directory::ACCESS_DIR)?)
}

/// Reads the users and groups of `warehouse`.
pub async fn load_directory(warehouse: &Warehouse) -> Result<Stored> {
    Stored::load(store(warehouse)?.as_ref()).await
}

/// Applies `change` to the directory of `warehouse` and saves it, in one read-modify-write.
pub async fn change_directory<T>(
    warehouse: &Warehouse,
    change: impl FnOnce(&mut Directory) -> Result<T>,
) -> Result<T> {
    let store = store(warehouse)?;
    let mut stored = Stored::load(store.as_ref()).await?;
    let out = change(&mut stored.directory)?;
    stored.save(store.as_ref()).await?;
    Ok(out)
}

/// One snapshot of a warehouse as the server serves it: the home session (everything, as
/// `rxcube sql` sees it) and the org placements scopes are resolved against.
#[derive(Clone)]
pub struct Snapshot {
    pub home: SessionContext,
    pub org: OrgIndex,
    /// The rollups the home session reads, fresh or stale (`system.rollups`).
    pub rollups: std::sync::Arc<rxcube_cube::rollup::Rollups>,
    /// What every answer of this snapshot depends on: each landed table's and rollup's
    /// version ([`rxcube_cube::rollup::Rollups::snapshot`]) and the cube definition. Two
    /// loads with the same version answer every statement alike.
    pub version: String,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("org", &self.org).finish()
    }
}

impl Snapshot {
    pub async fn load(warehouse: &Warehouse) -> Result<Self> {
        let def = rxcube_cube::definition_for(warehouse)
            .map_err(|e| AccessError::Invalid(e.to_string()))?;
        let default_timezone = def.time.default_timezone.clone();
        let definition = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{def:?}").hash(&mut h);
            h.finish()
        };
        let (home, rollups) = rxcube_cube::session_with_rollups(warehouse, def).await?;
        let org = OrgIndex::load(&home, &default_timezone).await?;
        let version = format!("{}\ncube definition {definition:016x}", rollups.snapshot);
        Ok(Self {
            home,
            org,
            rollups,
            version,
        })
    }

    /// The session of `principal`: its scope's relations only, scoped and masked.
    pub async fn user_session(&self, principal: &Principal) -> Result<SessionContext> {
        let reach = self.org.reach(&principal.scope);
        Ok(session::user_session(&self.home, principal, &reach).await?)
    }
}
