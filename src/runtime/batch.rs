//! Batch scoring's files (polars): a CSV or Parquet file read into the scorer's rows of text,
//! span by span, and the scored rows gathered back into a file of the same row order.
//!
//! Rows go through the same text cells as online scoring, so a job's outputs equal online
//! scoring of the same rows: CSV cells are passed as written, Parquet values as the text
//! that parses back to them exactly (floats in their shortest round-trip form).

use std::io::Cursor;

use polars::prelude::*;

use super::cells::Cells;
use crate::domain::job::FileFormat;
use crate::domain::schema::{Column as SchemaColumn, ColumnType};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the file is not a readable {format:?} table: {reason}")]
    Read { format: FileFormat, reason: String },
    #[error("the file lacks the model's input columns {0:?}")]
    MissingColumns(Vec<String>),
    #[error("column {column:?} cannot be read as text: {reason}")]
    Column { column: String, reason: String },
    #[error("the output could not be written: {0}")]
    Write(String),
}

/// A job's input, its columns in the model's schema order.
pub struct Table {
    columns: Vec<Series>,
    height: usize,
}

impl Table {
    /// Reads `bytes`; every input column of `schema` must be there (others are ignored).
    pub fn read(
        bytes: Vec<u8>,
        format: FileFormat,
        schema: &[SchemaColumn],
    ) -> Result<Table, BatchError> {
        let df = frame(bytes, format)?;
        let missing: Vec<String> = schema
            .iter()
            .filter(|c| df.column(&c.name).is_err())
            .map(|c| c.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(BatchError::MissingColumns(missing));
        }
        let columns = schema
            .iter()
            .filter_map(|c| df.column(&c.name).ok())
            .map(|c| c.as_materialized_series().rechunk())
            .collect();
        Ok(Table {
            columns,
            height: df.height(),
        })
    }

    /// Reads every column of `bytes`, with their names in file order.
    pub fn read_all(
        bytes: Vec<u8>,
        format: FileFormat,
    ) -> Result<(Vec<String>, Table), BatchError> {
        let df = frame(bytes, format)?;
        let names = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let columns = df
            .columns()
            .iter()
            .map(|c| c.as_materialized_series().rechunk())
            .collect();
        Ok((
            names,
            Table {
                columns,
                height: df.height(),
            },
        ))
    }

    /// Column `i`'s cells, as `rows` gives them.
    pub fn column(&self, i: usize) -> Result<Vec<String>, BatchError> {
        self.columns.get(i).map_or(Ok(Vec::new()), texts)
    }

    pub fn len(&self) -> usize {
        self.height
    }

    pub fn is_empty(&self) -> bool {
        self.height == 0
    }

    /// Rows `from..to` as the scorer takes them: text cells in schema order, "" for missing.
    pub fn rows(&self, from: usize, to: usize) -> Result<Cells, BatchError> {
        let n = to.saturating_sub(from);
        let columns = self
            .columns
            .iter()
            .map(|series| texts(&series.slice(from as i64, n)))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = columns.iter().flatten().map(String::len).sum();
        let mut rows = Cells::with_capacity(columns.len(), n, bytes);
        for r in 0..n {
            rows.push_row(columns.iter().map(|c| c.get(r).map_or("", String::as_str)));
        }
        Ok(rows)
    }
}

/// A CSV (every cell as text, as a scoring request would carry it) or Parquet file.
fn frame(bytes: Vec<u8>, format: FileFormat) -> Result<DataFrame, BatchError> {
    let read = |e: PolarsError| BatchError::Read {
        format,
        reason: e.to_string(),
    };
    match format {
        FileFormat::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
            .map_err(read),
        FileFormat::Parquet => ParquetReader::new(Cursor::new(bytes))
            .finish()
            .map_err(read),
    }
}

/// A column's cells as text: floats in their shortest round-trip form (JavaScript's rules,
/// as the scorer writes its outputs), everything else as polars casts it to text.
fn texts(series: &Series) -> Result<Vec<String>, BatchError> {
    let err = |e: PolarsError| BatchError::Column {
        column: series.name().to_string(),
        reason: e.to_string(),
    };
    let float = |v: Option<String>| v.unwrap_or_default();
    Ok(match series.dtype() {
        DataType::Float32 => series
            .f32()
            .map_err(err)?
            .iter()
            .map(|v| float(v.map(|v| ryu_js::Buffer::new().format(v).to_string())))
            .collect(),
        DataType::Float64 => series
            .f64()
            .map_err(err)?
            .iter()
            .map(|v| float(v.map(|v| ryu_js::Buffer::new().format(v).to_string())))
            .collect(),
        _ => {
            let text = series.cast(&DataType::String).map_err(err)?;
            text.str()
                .map_err(err)?
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        }
    })
}

/// One output column being gathered: typed for Parquet, the scorer's text for CSV (which
/// polars would otherwise re-format).
enum Gathered {
    Float32(Vec<Option<f32>>),
    Float64(Vec<Option<f64>>),
    Int32(Vec<Option<i32>>),
    Int64(Vec<Option<i64>>),
    Boolean(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
}

impl Gathered {
    fn push(&mut self, cell: Option<&str>) {
        fn parsed<T: std::str::FromStr>(cell: Option<&str>) -> Option<T> {
            cell.and_then(|c| c.parse().ok())
        }
        match self {
            Gathered::Float32(v) => v.push(parsed(cell)),
            Gathered::Float64(v) => v.push(parsed(cell)),
            Gathered::Int32(v) => v.push(parsed(cell)),
            Gathered::Int64(v) => v.push(parsed(cell)),
            Gathered::Boolean(v) => v.push(parsed(cell)),
            Gathered::Text(v) => v.push(cell.map(str::to_string)),
        }
    }

    fn column(self, name: &str) -> Column {
        let name = name.into();
        match self {
            Gathered::Float32(v) => Column::new(name, v),
            Gathered::Float64(v) => Column::new(name, v),
            Gathered::Int32(v) => Column::new(name, v),
            Gathered::Int64(v) => Column::new(name, v),
            Gathered::Boolean(v) => Column::new(name, v),
            Gathered::Text(v) => Column::new(name, v),
        }
    }
}

/// The scored file being gathered, one row per input row in file order; a refused row's
/// outputs are empty (null).
pub struct Output {
    names: Vec<String>,
    columns: Vec<Gathered>,
    format: FileFormat,
}

impl Output {
    pub fn new(schema: &[SchemaColumn], format: FileFormat) -> Output {
        let columns = schema
            .iter()
            .map(|c| match (format, c.column_type) {
                (FileFormat::Csv, _) => Gathered::Text(Vec::new()),
                (_, ColumnType::Float32) => Gathered::Float32(Vec::new()),
                (_, ColumnType::Float64) => Gathered::Float64(Vec::new()),
                (_, ColumnType::Int32) => Gathered::Int32(Vec::new()),
                (_, ColumnType::Int64 | ColumnType::Time64) => Gathered::Int64(Vec::new()),
                (_, ColumnType::Boolean) => Gathered::Boolean(Vec::new()),
                (_, ColumnType::String) => Gathered::Text(Vec::new()),
            })
            .collect();
        Output {
            names: schema.iter().map(|c| c.name.clone()).collect(),
            columns,
            format,
        }
    }

    /// Adds a span of file rows: `scored` answers the span's rows not in `skipped`, in order.
    pub fn push_span(&mut self, span: usize, skipped: &[usize], scored: &Cells) {
        let mut scored = scored.rows();
        let mut skipped = skipped.iter().peekable();
        for i in 0..span {
            let row = match skipped.peek() {
                Some(&&s) if s == i => {
                    skipped.next();
                    None
                }
                _ => scored.next(),
            };
            for (j, column) in self.columns.iter_mut().enumerate() {
                column.push(row.as_ref().and_then(|r| r.get(j)));
            }
        }
    }

    /// The file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, BatchError> {
        let columns = self
            .columns
            .into_iter()
            .zip(&self.names)
            .map(|(c, name)| c.column(name))
            .collect();
        let write = |e: PolarsError| BatchError::Write(e.to_string());
        let mut df = DataFrame::new_infer_height(columns).map_err(write)?;
        let mut bytes = Vec::new();
        match self.format {
            FileFormat::Csv => CsvWriter::new(&mut bytes).finish(&mut df).map_err(write)?,
            FileFormat::Parquet => {
                ParquetWriter::new(&mut bytes)
                    .finish(&mut df)
                    .map_err(write)?;
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(columns: &[(&str, ColumnType)]) -> Vec<SchemaColumn> {
        columns
            .iter()
            .map(|(n, t)| SchemaColumn {
                name: n.to_string(),
                column_type: *t,
            })
            .collect()
    }

    #[test]
    fn csv_cells_stay_as_written_in_schema_order() {
        let csv = b"b,extra,a\n1.50,x,true\n,y,false\n\"2e3\",z,\n".to_vec();
        let s = schema(&[("a", ColumnType::Boolean), ("b", ColumnType::Float32)]);
        let t = Table::read(csv, FileFormat::Csv, &s).unwrap();
        assert_eq!(t.len(), 3);
        let want = [["true", "1.50"], ["false", ""], ["", "2e3"]];
        assert_eq!(t.rows(0, 3).unwrap(), Cells::from_rows(2, want).unwrap());
        assert_eq!(
            t.rows(1, 2).unwrap(),
            Cells::from_rows(2, [want[1]]).unwrap()
        );
    }

    #[test]
    fn parquet_values_become_text_that_parses_back_exactly() {
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("f".into(), [Some(0.1f32), None, Some(1e-7)]),
            Column::new("d".into(), [0.1f64, 1.0 / 3.0, -0.0]),
            Column::new("i".into(), [1i64, -2, 3]),
            Column::new("s".into(), ["x", "", "z"]),
        ])
        .unwrap();
        let mut bytes = Vec::new();
        ParquetWriter::new(&mut bytes).finish(&mut df).unwrap();
        let s = schema(&[
            ("d", ColumnType::Float64),
            ("f", ColumnType::Float32),
            ("i", ColumnType::Int64),
            ("s", ColumnType::String),
        ]);
        let rows = Table::read(bytes, FileFormat::Parquet, &s)
            .unwrap()
            .rows(0, 3)
            .unwrap();
        let row = |r| rows.row(r).unwrap().iter().collect::<Vec<_>>();
        assert_eq!(row(0), ["0.1", "0.1", "1", "x"]);
        assert_eq!(rows.cell(1, 0).parse::<f64>().unwrap(), 1.0 / 3.0);
        assert_eq!(rows.cell(1, 1), "");
        assert_eq!(row(2)[..2], ["0", "1e-7"]);
    }

    #[test]
    fn a_file_without_the_model_columns_or_not_a_table_is_refused() {
        let s = schema(&[("a", ColumnType::Float32), ("b", ColumnType::Float32)]);
        let e = Table::read(b"a,c\n1,2\n".to_vec(), FileFormat::Csv, &s)
            .err()
            .unwrap();
        assert!(
            matches!(e, BatchError::MissingColumns(ref m) if m == &["b"]),
            "{e}"
        );
        let e = Table::read(b"not parquet".to_vec(), FileFormat::Parquet, &s)
            .err()
            .unwrap();
        assert!(matches!(e, BatchError::Read { .. }), "{e}");
    }

    #[test]
    fn refused_rows_leave_empty_outputs_in_file_order() {
        let s = schema(&[("p", ColumnType::Float32), ("label", ColumnType::Int64)]);
        let mut out = Output::new(&s, FileFormat::Parquet);
        let scored =
            |v: &[(&str, &str)]| Cells::from_rows(2, v.iter().map(|(a, b)| [a, b])).unwrap();
        out.push_span(3, &[1], &scored(&[("0.5", "1"), ("0.25", "0")]));
        out.push_span(1, &[0], &Cells::default());
        let bytes = out.finish().unwrap();
        let df = ParquetReader::new(Cursor::new(bytes)).finish().unwrap();
        let p: Vec<Option<f32>> = df.column("p").unwrap().f32().unwrap().iter().collect();
        assert_eq!(p, [Some(0.5), None, Some(0.25), None]);
        let label: Vec<Option<i64>> = df.column("label").unwrap().i64().unwrap().iter().collect();
        assert_eq!(label, [Some(1), None, Some(0), None]);
        let mut csv = Output::new(&s, FileFormat::Csv);
        csv.push_span(2, &[0], &scored(&[("0.30000001", "2")]));
        let text = String::from_utf8(csv.finish().unwrap()).unwrap();
        assert_eq!(text, "p,label\n,\n0.30000001,2\n");
    }
}
