//! How landed tables are laid out in Parquet for scan speed.
//!
//! Event tables are partitioned by the UTC month of their event time and each file is sorted by
//! that time. Sorted instants and integer keys are delta-encoded (they compress to a few bits a
//! row and keep tight min/max statistics), identifiers and low-cardinality strings are
//! dictionary-encoded, and page-level
//! statistics plus modest row groups let a time-range scan skip most of a file. The first key
//! column of an event table (`rx_id`, `txn_id`, ...) carries a Bloom filter per row group: an
//! import of a few late records matches them against the row groups that may hold their keys,
//! not the whole table (ids are labels in no useful order, so min/max statistics rarely prune).

use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use rxcube_model::{ColumnType, TableDef};

/// Rows per row group: small enough for time-range pruning, large enough for fast scans.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The false-positive rate of the key columns' Bloom filters: about 1 row group in 20 read in
/// vain per key looked up (each filter sized for a row group of distinct keys, then folded down
/// to the keys it holds).
pub const KEY_BLOOM_FPP: f64 = 0.05;

/// The column of `def` whose values an import looks up by Bloom filter, if any: the first key
/// column of an event table, when it is text.
pub fn bloom_key(def: &TableDef) -> Option<&'static str> {
    let first = *def.key.first()?;
    let column = def.columns.iter().find(|c| c.name == first)?;
    (def.event_time.is_some() && column.ty == ColumnType::Text).then_some(first)
}

/// Parquet writer settings for a contract table.
pub fn writer_properties(def: &TableDef) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("rxcube {}", env!("CARGO_PKG_VERSION")));
    if let Some(key) = bloom_key(def) {
        let path = ColumnPath::from(key);
        b = b
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), KEY_BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(path, ROW_GROUP_ROWS as u64);
    }
    for c in def.columns {
        let path = ColumnPath::from(c.name);
        let ordered = Some(c.name) == def.event_time || def.key.contains(&c.name);
        match c.ty {
            ColumnType::Instant | ColumnType::Int64 | ColumnType::Int32 | ColumnType::Date
                if ordered || c.ty == ColumnType::Instant =>
            {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            // Identifiers repeat (a pharmacy's, an employee's, a prescription's fills): a
            // dictionary, which Parquet drops by itself for a column chunk of unique ids.
            ColumnType::Text if !c.low_cardinality && !c.is_identifier() => {
                b = b.set_column_dictionary_enabled(path, false);
            }
            _ => {}
        }
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rxcube_model::contract::{PHARMACIES, RX_FILLS};

    #[test]
    fn sorted_instants_and_keys_are_delta_encoded_and_ids_and_tags_use_dictionaries() {
        let p = writer_properties(&RX_FILLS);
        for c in ["filled_at", "received_at", "fill_no"] {
            let path = ColumnPath::from(c);
            assert_eq!(
                p.encoding(&path),
                Some(Encoding::DELTA_BINARY_PACKED),
                "{c}"
            );
            assert!(!p.dictionary_enabled(&path), "{c}");
        }
        for c in ["channel", "rx_id", "pharmacy_id"] {
            assert!(p.dictionary_enabled(&ColumnPath::from(c)), "{c}");
        }
        assert_eq!(
            p.statistics_enabled(&ColumnPath::from("filled_at")),
            EnabledStatistics::Page
        );
        assert!(!writer_properties(&PHARMACIES).dictionary_enabled(&ColumnPath::from("name")));
    }

    #[test]
    fn the_first_key_of_an_event_table_has_a_bloom_filter() {
        assert_eq!(bloom_key(&RX_FILLS), Some("rx_id"));
        assert_eq!(bloom_key(&PHARMACIES), None);
        let p = writer_properties(&RX_FILLS);
        let rx_id = p
            .bloom_filter_properties(&ColumnPath::from("rx_id"))
            .expect("rx_id has a Bloom filter");
        assert_eq!(
            (rx_id.fpp(), rx_id.ndv()),
            (KEY_BLOOM_FPP, ROW_GROUP_ROWS as u64)
        );
        for c in ["fill_no", "pharmacy_id", "filled_at"] {
            assert!(
                p.bloom_filter_properties(&ColumnPath::from(c)).is_none(),
                "{c}"
            );
        }
    }
}
