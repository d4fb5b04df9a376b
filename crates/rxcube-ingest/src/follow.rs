//! A landing directory: where files arrive to be imported as they come (`rxcube import
//! --follow DIR`).
//!
//! Files are placed in a folder named after their table (`DIR/rx_fills/2024-03-05.csv`), or,
//! when the landing directory is for one table, straight in `DIR`. A file is picked up once it
//! has stopped changing: its size and modification time are the same at two scans in a row
//! (a writer still appending is left alone; a writer that renames a finished file into place is
//! picked up at the second scan). Names starting with `.` or `_`, and names ending in `.tmp`,
//! `.part`, `.partial` or `.crdownload`, are in-flight files and never picked up; nor are
//! files other than `.csv` and `.parquet`, which are reported once.
//!
//! Each file is one import run: checked whole, posted in one atomic commit or not at all.
//! Then it is moved out of the way: to `DIR/_imported/<table>/` when accepted, to
//! `DIR/_rejected/<table>/` when rejected, with `<name>.errors.txt` beside it saying why. A file
//! whose run failed for another reason (the warehouse could not be reached) stays where it is
//! and is tried again. Nothing is lost on a crash or a restart: a file is either committed or
//! still waiting, and one committed but not yet moved (the process died between the commit and
//! the move) is imported again, which changes nothing (every record is `unchanged`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rxcube_model::TableName;

use crate::error::{IngestError, Result};

/// Where accepted files go, under the landing directory.
pub const IMPORTED: &str = "_imported";
/// Where rejected files go, with their error reports.
pub const REJECTED: &str = "_rejected";

/// A file ready to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub path: PathBuf,
    pub table: TableName,
}

/// A landing directory and what its last scan saw.
#[derive(Debug)]
pub struct Landing {
    dir: PathBuf,
    /// The table of every file, when the directory is for one table.
    table: Option<TableName>,
    /// Each candidate file's size and modification time at the last scan.
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    /// Files already reported as not importable (reported once).
    reported: BTreeSet<PathBuf>,
}

/// Whether `name` is a file in flight (being written, or a temporary of a writer).
fn in_flight(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || [".tmp", ".part", ".partial", ".crdownload"]
            .iter()
            .any(|s| name.to_ascii_lowercase().ends_with(s))
}

/// Whether `name` is a file the import reads.
fn importable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".csv") || lower.ends_with(".parquet")
}

impl Landing {
    /// The landing directory `dir` (which must exist), for `table`'s files only or (`None`)
    /// for every table's, each in its table's folder.
    pub fn new(dir: &Path, table: Option<TableName>) -> Result<Self> {
        let io = |source| IngestError::Io {
            file: dir.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(IngestError::Usage(format!(
                "{}: not a directory (--follow watches a landing directory)",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            table,
            seen: HashMap::new(),
            reported: BTreeSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folders files of each table arrive in.
    fn folders(&self) -> Vec<(PathBuf, TableName)> {
        match self.table {
            Some(t) => vec![(self.dir.clone(), t)],
            None => TableName::ALL
                .into_iter()
                .map(|t| (self.dir.join(t.as_str()), t))
                .collect(),
        }
    }

    /// The files that stopped changing since the last scan, reference tables first, then by
    /// modification time and name (the order they arrived in). Also returns the files that
    /// will never be imported (another extension, or a file in the root of a landing directory
    /// for every table), each once.
    pub fn scan(&mut self) -> Result<(Vec<Arrival>, Vec<String>)> {
        let mut now: HashMap<PathBuf, (u64, Option<SystemTime>)> = HashMap::new();
        let mut ready = Vec::new();
        let mut notes = Vec::new();
        for (folder, table) in self.folders() {
            let entries = match std::fs::read_dir(&folder) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(IngestError::Io {
                        file: folder.display().to_string(),
                        source,
                    });
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().to_string();
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() || in_flight(&name) {
                    continue;
                }
                if !importable(&name) {
                    if self.reported.insert(path.clone()) {
                        notes.push(format!(
                            "{}: not a .csv or .parquet file; left where it is",
                            path.display()
                        ));
                    }
                    continue;
                }
                let stamp = (meta.len(), meta.modified().ok());
                if self.seen.get(&path) == Some(&stamp) {
                    ready.push((
                        stamp.1,
                        Arrival {
                            path: path.clone(),
                            table,
                        },
                    ));
                }
                now.insert(path, stamp);
            }
        }
        if self.table.is_none() {
            self.note_stray_files(&mut notes);
        }
        self.seen = now;
        ready.sort_by(|(ta, a), (tb, b)| (a.table, ta, &a.path).cmp(&(b.table, tb, &b.path)));
        Ok((ready.into_iter().map(|(_, a)| a).collect(), notes))
    }

    /// Files in the root of a landing directory for every table: they name no table.
    fn note_stray_files(&mut self, notes: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if entry.metadata().is_ok_and(|m| m.is_file())
                && !in_flight(&name)
                && self.reported.insert(path.clone())
            {
                notes.push(format!(
                    "{}: names no table; put it in the folder of its table ({}/<table>/, e.g. \
                     {}/rx_fills/), or follow a directory of one table's files (rxcube import \
                     <table> --follow DIR)",
                    path.display(),
                    self.dir.display(),
                    self.dir.display()
                ));
            }
        }
    }

    /// Moves an accepted file to `_imported/<table>/`; returns where it went.
    pub fn imported(&mut self, arrival: &Arrival) -> Result<PathBuf> {
        let to = self.move_to(IMPORTED, arrival)?;
        self.seen.remove(&arrival.path);
        Ok(to)
    }

    /// Moves a rejected file to `_rejected/<table>/`, with `report` beside it in
    /// `<name>.errors.txt`; returns where the file went.
    pub fn rejected(&mut self, arrival: &Arrival, report: &str) -> Result<PathBuf> {
        let to = self.move_to(REJECTED, arrival)?;
        let mut errors = to.clone().into_os_string();
        errors.push(".errors.txt");
        let errors = PathBuf::from(errors);
        write_new(&errors, report.as_bytes())?;
        self.seen.remove(&arrival.path);
        Ok(to)
    }

    /// Moves `arrival` into `<dir>/<under>/<table>/`, under a name no earlier file has there
    /// (`name`, `name.1`, ...).
    fn move_to(&self, under: &str, arrival: &Arrival) -> Result<PathBuf> {
        let folder = self.dir.join(under).join(arrival.table.as_str());
        let io = |file: &Path| {
            let file = file.display().to_string();
            move |source| IngestError::Io { file, source }
        };
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let name = arrival
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut to = folder.join(&name);
        let mut n = 0;
        while to.exists() {
            n += 1;
            to = folder.join(format!("{name}.{n}"));
        }
        std::fs::rename(&arrival.path, &to).map_err(io(&arrival.path))?;
        Ok(to)
    }
}

/// Writes `bytes` to `path` whole: to a temporary beside it, then renamed into place.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| IngestError::Io {
        file: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn files_are_picked_up_once_they_stop_changing_reference_tables_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut landing = Landing::new(root, None).expect("a directory");
        touch(&root.join("rx_fills/a.csv"), "x");
        touch(&root.join("pharmacies/p.parquet"), "x");
        touch(&root.join("rx_fills/.b.csv"), "x");
        touch(&root.join("rx_fills/c.csv.part"), "x");
        touch(&root.join("rx_fills/notes.txt"), "x");
        touch(&root.join("stray.csv"), "x");
        let (ready, notes) = landing.scan().expect("scan");
        assert!(ready.is_empty(), "first sight: {ready:?}");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("notes.txt: not a .csv")));
        assert!(
            notes
                .iter()
                .any(|n| n.contains("stray.csv: names no table"))
        );
        // Still being written: not yet.
        touch(&root.join("rx_fills/a.csv"), "xy");
        let (ready, notes) = landing.scan().expect("scan");
        assert_eq!(
            ready,
            [Arrival {
                path: root.join("pharmacies/p.parquet"),
                table: TableName::Pharmacies
            }]
        );
        assert!(notes.is_empty(), "reported once: {notes:?}");
        let (ready, _) = landing.scan().expect("scan");
        let tables: Vec<TableName> = ready.iter().map(|a| a.table).collect();
        assert_eq!(tables, [TableName::Pharmacies, TableName::RxFills]);

        // Moved out of the way, never over an earlier file of the same name.
        let p = ready[0].clone();
        let to = landing.imported(&p).expect("moved");
        assert_eq!(to, root.join("_imported/pharmacies/p.parquet"));
        touch(&root.join("pharmacies/p.parquet"), "again");
        let to = landing
            .imported(&Arrival {
                path: root.join("pharmacies/p.parquet"),
                table: TableName::Pharmacies,
            })
            .expect("moved");
        assert_eq!(to, root.join("_imported/pharmacies/p.parquet.1"));
        let to = landing
            .rejected(&ready[1], "rx_fills: rejected")
            .expect("moved");
        assert_eq!(to, root.join("_rejected/rx_fills/a.csv"));
        assert_eq!(
            std::fs::read_to_string(root.join("_rejected/rx_fills/a.csv.errors.txt"))
                .expect("report"),
            "rx_fills: rejected"
        );
        let (ready, _) = landing.scan().expect("scan");
        assert!(ready.is_empty(), "{ready:?}");
    }

    #[test]
    fn a_landing_directory_of_one_table_takes_files_in_its_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut landing = Landing::new(dir.path(), Some(TableName::Pos)).expect("a directory");
        touch(&dir.path().join("lines.csv"), "x");
        assert!(landing.scan().expect("scan").0.is_empty());
        assert_eq!(
            landing.scan().expect("scan").0,
            [Arrival {
                path: dir.path().join("lines.csv"),
                table: TableName::Pos
            }]
        );
        let file = dir.path().join("lines.csv");
        assert!(matches!(
            Landing::new(&file, None),
            Err(IngestError::Usage(m)) if m.contains("not a directory")
        ));
    }
}
