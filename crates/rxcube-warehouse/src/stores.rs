//! Object stores beyond the local file system.
//!
//! deltalake resolves a table URL through its registries of object-store and log-store
//! factories; out of the box they know `file://` and `memory://`. [`register`] adds `s3://` and
//! `s3a://` through object_store's `AmazonS3` (AWS S3 and S3-compatible servers such as MinIO).
//! Commits stay atomic there: deltalake writes each log entry with a conditional put
//! (`If-None-Match: *`), which S3 and the common S3-compatible servers honour.
//!
//! Credentials and endpoints come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, ...) and can be overridden per warehouse with storage options named as
//! object_store names them (`aws_endpoint`, `aws_allow_http`, ...).

use std::str::FromStr;
use std::sync::{Arc, Once};

use deltalake::logstore::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use url::Url;

/// URL schemes served by object_store's S3 client.
pub const S3_SCHEMES: [&str; 2] = ["s3", "s3a"];

/// Registers the S3 object store with deltalake, once per process.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in S3_SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                object_store_factories().insert(url.clone(), Arc::new(S3Factory));
                logstore_factories().insert(url, Arc::new(S3Factory));
            }
        }
    });
}

#[derive(Debug, Clone, Copy)]
struct S3Factory;

/// Builds the S3 client for `url` from the environment, then the warehouse's options.
pub(crate) fn s3_builder(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
) -> DeltaResult<AmazonS3Builder> {
    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        DeltaTableError::InvalidTableLocation(format!("{url}: an S3 URL needs a bucket name"))
    })?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in options {
        let key = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase()).map_err(|_| {
            DeltaTableError::Generic(format!(
                "unknown S3 storage option '{key}' (expected object_store's names, e.g. aws_endpoint)"
            ))
        })?;
        builder = builder.with_config(key, value);
    }
    Ok(builder)
}

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = s3_builder(url, &config.raw)?
            .build()
            .map_err(|e| DeltaTableError::Generic(format!("{url}: cannot set up S3: {e}")))?;
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        Ok((Arc::new(store), path))
    }
}

impl LogStoreFactory for S3Factory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn s3_urls_resolve_to_a_store_and_bad_options_are_named() {
        register();
        let url = Url::parse("s3://chain/warehouse/rx_fills/").expect("url");
        let options: HashMap<String, String> = [
            (
                "aws_endpoint".to_string(),
                "http://127.0.0.1:9000".to_string(),
            ),
            ("aws_allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_access_key_id".to_string(), "k".to_string()),
            ("aws_secret_access_key".to_string(), "s".to_string()),
        ]
        .into();
        let config = StorageConfig {
            raw: options.clone(),
            ..Default::default()
        };
        let (_, path) = S3Factory.parse_url_opts(&url, &config).expect("store");
        assert_eq!(path.as_ref(), "warehouse/rx_fills");
        let factory = object_store_factories()
            .get(&Url::parse("s3://").expect("url"))
            .map(|f| f.value().clone());
        assert!(factory.is_some(), "s3:// is registered");

        let mut bad = options;
        bad.insert("aws_no_such_thing".into(), "1".into());
        let err = s3_builder(&url, &bad)
            .expect_err("unknown option")
            .to_string();
        assert!(
            err.contains("unknown S3 storage option 'aws_no_such_thing'"),
            "{err}"
        );
        let err = s3_builder(&Url::parse("s3:///x").expect("url"), &HashMap::new())
            .expect_err("no bucket")
            .to_string();
        assert!(err.contains("needs a bucket name"), "{err}");
    }
}
