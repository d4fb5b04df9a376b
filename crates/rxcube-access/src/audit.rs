//! The audit log: logins, failed logins, denied statements and queries, appended to the
//! warehouse's `system.audit_log` Delta table.
//!
//! Events are buffered and written in one commit per flush (every second by default, and on
//! shutdown), so auditing costs a query no I/O. A flush that fails keeps its events for the
//! next one; a killed server loses at most the last interval.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use rxcube_warehouse::Warehouse;
use rxcube_warehouse::system::SystemTable;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Login,
    LoginFailed,
    Denied,
    Query,
    Error,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::LoginFailed => "login_failed",
            Event::Denied => "denied",
            Event::Query => "query",
            Event::Error => "error",
        }
    }
}

/// One row of `system.audit_log`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Microseconds since the Unix epoch, UTC.
    pub at: i64,
    pub user_name: String,
    pub event: Event,
    /// The client's address.
    pub client: Option<String>,
    pub sql: Option<String>,
    pub rows: Option<i64>,
    pub millis: Option<f64>,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(user_name: &str, event: Event) -> Self {
        Self {
            at: chrono::Utc::now().timestamp_micros(),
            user_name: user_name.to_string(),
            event,
            client: None,
            sql: None,
            rows: None,
            millis: None,
            detail: None,
        }
    }
}

/// The buffered writer of the audit log.
#[derive(Debug)]
pub struct AuditLog {
    warehouse: Warehouse,
    pending: Mutex<Vec<Entry>>,
    /// One flush at a time, so commits keep the order of events.
    flushing: tokio::sync::Mutex<()>,
}

impl AuditLog {
    pub fn new(warehouse: Warehouse) -> Arc<Self> {
        Arc::new(Self {
            warehouse,
            pending: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn record(&self, entry: Entry) {
        tracing::info!(
            user = %entry.user_name,
            event = entry.event.as_str(),
            client = entry.client.as_deref().unwrap_or(""),
            rows = entry.rows,
            detail = entry.detail.as_deref().unwrap_or(""),
            "audit"
        );
        if let Ok(mut p) = self.pending.lock() {
            p.push(entry);
        }
    }

    /// Writes the buffered events in one commit; on failure they stay buffered.
    pub async fn flush(&self) -> rxcube_warehouse::Result<usize> {
        let _one = self.flushing.lock().await;
        let entries = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(0),
        };
        if entries.is_empty() {
            return Ok(0);
        }
        let n = entries.len();
        let result = match batch(&entries) {
            Ok(b) => self.warehouse.append_audit(b).await,
            Err(e) => Err(rxcube_warehouse::WarehouseError::Query {
                table: SystemTable::AuditLog.name().into(),
                source: e.into(),
            }),
        };
        if let Err(e) = result {
            if let Ok(mut p) = self.pending.lock() {
                let newer = std::mem::take(&mut *p);
                *p = entries;
                p.extend(newer);
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Flushes every `interval` until the process ends (spawn it).
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush().await {
                tracing::warn!("cannot write the audit log (will retry): {e}");
            }
        }
    }
}

fn batch(entries: &[Entry]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: &dyn Fn(&Entry) -> Option<&str>| -> ArrayRef {
        Arc::new(entries.iter().map(f).collect::<StringArray>())
    };
    RecordBatch::try_new(
        SystemTable::AuditLog.schema(),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(entries.iter().map(|e| e.at))
                    .with_timezone("UTC"),
            ),
            text(&|e| Some(e.user_name.as_str())),
            text(&|e| Some(e.event.as_str())),
            text(&|e| e.client.as_deref()),
            text(&|e| e.sql.as_deref()),
            Arc::new(entries.iter().map(|e| e.rows).collect::<Int64Array>()),
            Arc::new(entries.iter().map(|e| e.millis).collect::<Float64Array>()),
            text(&|e| e.detail.as_deref()),
        ],
    )
}
