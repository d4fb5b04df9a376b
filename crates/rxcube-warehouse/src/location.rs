//! Where a warehouse lives: a root URL and the tables under it.

use std::collections::HashMap;
use std::path::Path;

use deltalake::DeltaTable;
use rxcube_model::TableDef;
use url::Url;

use crate::{Result, WarehouseError};

/// A warehouse: a root location holding one Delta table per contract table.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: Url,
    storage_options: HashMap<String, String>,
}

impl Warehouse {
    /// Opens the warehouse at `location`: a local path (created if missing) or an object_store
    /// URL such as `s3://bucket/prefix` or `memory:///`.
    pub fn open(location: &str) -> Result<Self> {
        crate::stores::register();
        let bad = |reason: String| WarehouseError::Location {
            location: location.to_string(),
            reason,
        };
        let mut root = if location.contains("://") {
            Url::parse(location).map_err(|e| bad(e.to_string()))?
        } else {
            let path = Path::new(location);
            std::fs::create_dir_all(path)
                .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
            let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&abs)
                .map_err(|()| bad("not an absolute directory path".into()))?
        };
        if root.scheme() == "file" {
            let path = root
                .to_file_path()
                .map_err(|()| bad("not a local path".into()))?;
            std::fs::create_dir_all(&path)
                .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
        }
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Ok(Self {
            root,
            storage_options: HashMap::new(),
        })
    }

    /// Options passed to the object store (credentials, endpoints), e.g. `aws_endpoint`.
    pub fn with_storage_options(mut self, options: HashMap<String, String>) -> Self {
        self.storage_options = options;
        self
    }

    /// The options of [`Self::with_storage_options`].
    pub(crate) fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The root URL, ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The URL of the table directory `name` (relative to the root, may contain `/`).
    pub fn table_url(&self, name: &str) -> Url {
        // The root ends in '/', and names are our own identifiers: join cannot fail.
        self.root
            .join(&format!("{name}/"))
            .unwrap_or_else(|_| self.root.clone())
    }

    /// Loads the Delta table stored at `name`; `None` when it has never been committed.
    pub async fn load_named(&self, name: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name);
        if let Ok(path) = url.to_file_path()
            && !path.join("_delta_log").is_dir()
        {
            return Ok(None);
        }
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: url.to_string(),
            source,
        };
        let table = DeltaTable::try_from_url_with_storage_options(
            url.clone(),
            self.storage_options.clone(),
        )
        .await
        .map_err(err)?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Loads a contract table; `None` when nothing has been imported into it yet.
    ///
    /// A table stored with other column types than the contract's (a warehouse landed by an
    /// older rxcube, whose ids were integers) is an error that says how to re-land it.
    pub async fn load(&self, def: &TableDef) -> Result<Option<DeltaTable>> {
        let Some(table) = self.load_named(def.name).await? else {
            return Ok(None);
        };
        if let Ok(state) = table.snapshot() {
            check_stored_schema(def, &state.snapshot().arrow_schema(), self.root())?;
        }
        Ok(Some(table))
    }

    /// The object store rooted at the directory `dir` (relative to the root), configured like
    /// the warehouse's tables: for small documents the warehouse keeps beside them.
    pub fn store(&self, dir: &str) -> Result<deltalake::logstore::ObjectStoreRef> {
        Ok(self.handle(dir)?.object_store())
    }

    /// An unloaded handle on the table location `name`, for a first write that creates it.
    pub(crate) fn handle(&self, name: &str) -> Result<DeltaTable> {
        let url = self.table_url(name);
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|e| WarehouseError::Location {
                location: url.to_string(),
                reason: format!("cannot create the table directory: {e}"),
            })?;
        }
        // Built, not loaded: there is no log to read yet.
        deltalake::DeltaTableBuilder::from_url(url.clone())
            .map(|b| b.with_storage_options(self.storage_options.clone()))
            .and_then(|b| b.build())
            .map_err(|source| WarehouseError::Delta {
                table: name.to_string(),
                url: url.to_string(),
                source,
            })
    }
}

/// Compares a stored table's columns with the contract's.
fn check_stored_schema(
    def: &TableDef,
    stored: &arrow::datatypes::Schema,
    root: &Url,
) -> Result<()> {
    for c in def.columns {
        let want = c.ty.arrow_type();
        let Ok(field) = stored.field_with_name(c.name) else {
            continue;
        };
        let got = field.data_type();
        let same = match (&want, got) {
            // Strings may come back dictionary-encoded or as views.
            (arrow::datatypes::DataType::Utf8, t) => {
                matches!(
                    t,
                    arrow::datatypes::DataType::Utf8
                        | arrow::datatypes::DataType::LargeUtf8
                        | arrow::datatypes::DataType::Utf8View
                        | arrow::datatypes::DataType::Dictionary(..)
                )
            }
            (w, g) => w == g,
        };
        if !same {
            let why = if got.is_integer() && c.ty == rxcube_model::ColumnType::Text {
                "identifiers are text labels now (RX101, 00423, E1001), and this table was landed by \
                 an older rxcube with integer ids"
            } else {
                "the table was written by another version of rxcube"
            };
            return Err(WarehouseError::Schema {
                table: def.name.to_string(),
                reason: format!(
                    "column {} is stored as {got}, the contract says {want}: {why}. Re-land the \
                     warehouse: move {root} aside and import the source files again into a new \
                     one (`rxcube demo` re-lands the demo warehouse by itself)",
                    c.name
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_path_becomes_a_directory_url_and_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w");
        let w = Warehouse::open(path.to_str().expect("utf8")).expect("open");
        assert!(path.is_dir());
        assert_eq!(w.root().scheme(), "file");
        assert!(w.root().as_str().ends_with("/w/"));
        assert!(w.table_url("rx_fills").as_str().ends_with("/w/rx_fills/"));
        assert!(
            w.table_url("_rxcube/import_log")
                .as_str()
                .ends_with("/w/_rxcube/import_log/")
        );
    }

    #[test]
    fn object_store_urls_are_kept_and_garbage_is_named() {
        let w = Warehouse::open("s3://bucket/chain").expect("s3 url");
        assert_eq!(w.table_url("pos").as_str(), "s3://bucket/chain/pos/");
        let err = Warehouse::open("s3://[bad").unwrap_err().to_string();
        assert!(
            err.contains("invalid warehouse location 's3://[bad'"),
            "{err}"
        );
    }
}
