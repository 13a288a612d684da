//! Drift between two files, with no ledger: what `provenant drift` prints, and what the CI
//! check compares with scipy. Column kinds are inferred: a column whose every present cell
//! is a number is numeric, any other categorical.

use std::collections::BTreeMap;

use super::{ColumnProfile, Kind, Report, Sample, profile};
use crate::domain::job::FileFormat;
use crate::domain::reference::DriftThresholds;
use crate::runtime::batch::{BatchError, Table};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Read(#[from] BatchError),
    #[error("{0}")]
    NotANumber(#[from] super::NotANumber),
    #[error("column {0:?} of the reference has no values")]
    EmptyReference(String),
}

/// Every column of a file, as text cells, by name.
fn columns(bytes: Vec<u8>, format: FileFormat) -> Result<Vec<(String, Vec<String>)>, FilesError> {
    let (names, table) = Table::read_all(bytes, format)?;
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| Ok((n, table.column(i)?)))
        .collect()
}

fn numeric(cells: &[String]) -> bool {
    cells
        .iter()
        .all(|c| c.is_empty() || c.trim().parse::<f64>().is_ok())
}

/// The reference's columns profiled and compared with the same columns of `current`; a
/// column is numeric when its every present cell is a number in both files.
pub fn compare_files(
    reference: (Vec<u8>, FileFormat),
    current: (Vec<u8>, FileFormat),
) -> Result<(Vec<ColumnProfile>, Report), FilesError> {
    let mut current: BTreeMap<String, Vec<String>> =
        columns(current.0, current.1)?.into_iter().collect();
    let mut profiles = Vec::new();
    let (mut refs, mut curs) = (BTreeMap::new(), BTreeMap::new());
    for (name, cells) in columns(reference.0, reference.1)? {
        let now = current.remove(&name);
        let kind = match &now {
            Some(c) if numeric(&cells) && numeric(c) => Kind::Numeric,
            _ => Kind::Categorical,
        };
        let sample = Sample::read(kind, cells.iter().map(String::as_str))?;
        profiles.push(profile(&name, &sample).ok_or(FilesError::EmptyReference(name.clone()))?);
        if let Some(c) = now {
            curs.insert(
                name.clone(),
                Sample::read(kind, c.iter().map(String::as_str))?,
            );
        }
        refs.insert(name, sample);
    }
    let report = Report::new(&profiles, &refs, &curs, &DriftThresholds::default());
    Ok((profiles, report))
}
