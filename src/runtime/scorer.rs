//! The scoring core: string cells converted by the model schema into one tensor per ONNX
//! input, one ONNX Runtime session run, and the outputs back as string columns.
//!
//! `Session::run` needs `&mut`, so a model keeps a small pool of sessions (one per concurrent
//! run) rather than one behind a mutex. The session settings are fixed per model and are what
//! a prediction record states, because ONNX Runtime's results depend on them.

use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{PrimitiveTensorElementType, Tensor, TensorElementType, TensorRef, ValueType};

use super::cells::Cells;
use super::onnx::Onnx;
use crate::domain::schema::{Column, ColumnType};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The request does not fit the schema: a 400 for the caller.
    #[error("{0}")]
    BadInput(String),
    /// The model cannot be run as recorded.
    #[error("the model cannot be loaded: {0}")]
    Load(String),
    #[error("ONNX Runtime failed: {0}")]
    Run(String),
}

/// How sessions are built; recorded with every inference run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// `sequential` or `parallel`.
    pub execution_mode: String,
    /// `disable`, `basic`, `extended` or `all`.
    pub graph_optimization: String,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            intra_op_threads: 1,
            inter_op_threads: 1,
            execution_mode: "sequential".into(),
            graph_optimization: "all".into(),
        }
    }
}

/// One ONNX input: which schema columns feed it, in order, and its element type.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    element: TensorElementType,
    /// Indexes into the schema's columns.
    columns: Vec<usize>,
}

/// One ONNX output the scorer returns: its columns and their type.
#[derive(Debug, Clone)]
struct Output {
    name: String,
    width: usize,
    column_type: ColumnType,
}

/// A model ready to score.
pub struct Model {
    schema: Vec<Column>,
    inputs: Vec<Input>,
    outputs: Vec<Output>,
    output_names: Vec<String>,
    settings: SessionSettings,
    bytes: Vec<u8>,
    onnx: &'static Onnx,
    idle: Mutex<Vec<Session>>,
    /// Nanoseconds per row of the latest session run (0 until one ran): how long the next
    /// run will take, to run small ones where they are (see `Model::is_quick`).
    ns_per_row: std::sync::atomic::AtomicU64,
}

/// Scored rows: output column names and one row of string cells per input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub fields: Vec<String>,
    pub rows: Cells,
}

impl Model {
    /// Loads `bytes` and lays the schema's columns onto the graph's inputs: a `[N]` or
    /// `[N, 1]` input takes the column of its name, an `[N, k]` input the columns
    /// `name.0` … `name.k-1`. With a `target`, outputs follow H2O: a classifier (a float
    /// output of two or more columns) answers one probability column per class,
    /// `<target>.<class>`, and a single-column regressor answers `<target>`; without one,
    /// every output under the graph's own names.
    pub fn load(
        onnx: &'static Onnx,
        bytes: Vec<u8>,
        schema: Vec<Column>,
        target: Option<&str>,
        settings: SessionSettings,
    ) -> Result<Model, ScoreError> {
        let session = build(onnx, &bytes, &settings)?;
        let mut inputs = Vec::new();
        for outlet in session.inputs() {
            let name = outlet.name().to_string();
            let (element, width) = tensor_layout(outlet.dtype()).ok_or_else(|| {
                ScoreError::Load(format!("input {name:?} is not a [N] or [N, k] tensor"))
            })?;
            let wanted: Vec<String> = if width == 1 {
                vec![name.clone()]
            } else {
                (0..width).map(|i| format!("{name}.{i}")).collect()
            };
            let columns = wanted
                .iter()
                .map(|w| {
                    schema.iter().position(|c| c.name == *w).ok_or_else(|| {
                        ScoreError::Load(format!(
                            "the input schema has no column {w:?} for model input {name:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            inputs.push(Input {
                name,
                element,
                columns,
            });
        }
        let mut outputs = Vec::new();
        for outlet in session.outputs() {
            let name = outlet.name().to_string();
            let layout = tensor_layout(outlet.dtype());
            let (element, width) = layout.ok_or_else(|| {
                ScoreError::Load(format!("output {name:?} is not a [N] or [N, k] tensor"))
            })?;
            let column_type = super::ingest::column_type(element).ok_or_else(|| {
                ScoreError::Load(format!("output {name:?} has element type {element}"))
            })?;
            outputs.push(Output {
                name,
                width,
                column_type,
            });
        }
        let is_float =
            |o: &Output| matches!(o.column_type, ColumnType::Float32 | ColumnType::Float64);
        let (outputs, output_names): (Vec<Output>, Vec<String>) = match target {
            Some(t) if outputs.iter().any(|o| is_float(o) && o.width >= 2) => {
                let probs = outputs
                    .into_iter()
                    .find(|o| is_float(o) && o.width >= 2)
                    .into_iter()
                    .collect::<Vec<_>>();
                let names = (0..probs[0].width).map(|i| format!("{t}.{i}")).collect();
                (probs, names)
            }
            Some(t) if outputs.len() == 1 && outputs[0].width == 1 && is_float(&outputs[0]) => {
                (outputs, vec![t.to_string()])
            }
            _ => {
                let names = outputs
                    .iter()
                    .flat_map(|o| match o.width {
                        1 => vec![o.name.clone()],
                        w => (0..w).map(|i| format!("{}.{i}", o.name)).collect(),
                    })
                    .collect();
                (outputs, names)
            }
        };
        Ok(Model {
            schema,
            inputs,
            outputs,
            output_names,
            settings,
            bytes,
            onnx,
            idle: Mutex::new(vec![session]),
            ns_per_row: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn schema(&self) -> &[Column] {
        &self.schema
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// The columns the scorer answers, with their types.
    pub fn output_schema(&self) -> Vec<Column> {
        let types = self
            .outputs
            .iter()
            .flat_map(|o| std::iter::repeat_n(o.column_type, o.width));
        self.output_names
            .iter()
            .zip(types)
            .map(|(name, column_type)| Column {
                name: name.clone(),
                column_type,
            })
            .collect()
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Parses rows (in schema column order) into the session's input values, once: a
    /// request's rows are checked and converted before it can share a batch, and the batch
    /// runs on what they became. The first bad cell, row by row, is the error.
    pub fn features(&self, rows: &Cells) -> Result<Features, ScoreError> {
        self.features_of(rows, 0..rows.len())
    }

    /// `features` of rows `range` alone, numbered from the range's start in errors: one of
    /// several session runs over a table, without a copy of its rows.
    pub fn features_of(
        &self,
        rows: &Cells,
        range: std::ops::Range<usize>,
    ) -> Result<Features, ScoreError> {
        let mut values = self.empty_values(range.len())?;
        for r in range.clone() {
            self.push_row(rows, r, r - range.start, &mut values)?;
        }
        Ok(Features {
            rows: range.len(),
            values,
        })
    }

    /// Parses the rows that fit the schema and sets aside the others, each with its first bad
    /// cell, numbered from `first` (a job's file row) in the reasons and the answer.
    pub fn fitting(&self, rows: Cells, first: usize) -> Result<Fitting, ScoreError> {
        let mut values = self.empty_values(rows.len())?;
        let mut refused = Vec::new();
        for i in 0..rows.len() {
            let lens: Vec<usize> = values.iter().map(Values::len).collect();
            if let Err(e) = self.push_row(&rows, i, first + i, &mut values) {
                values.iter_mut().zip(lens).for_each(|(v, n)| v.truncate(n));
                refused.push((first + i, e));
            }
        }
        // Most rows fit: then the table is kept as it is.
        let good = if refused.is_empty() {
            rows
        } else {
            let mut good = Cells::with_capacity(rows.width(), rows.len(), rows.text().len());
            let mut bad = refused.iter().map(|(r, _)| r - first).peekable();
            for (i, row) in rows.rows().enumerate() {
                if bad.next_if_eq(&i).is_none() {
                    good.push_row(row.iter());
                }
            }
            good
        };
        let features = Features {
            rows: good.len(),
            values,
        };
        Ok(Fitting {
            rows: good,
            features,
            refused,
        })
    }

    fn empty_values(&self, rows: usize) -> Result<Vec<Values>, ScoreError> {
        self.inputs
            .iter()
            .map(|i| Values::with_capacity(i.element, rows * i.columns.len()))
            .collect()
    }

    /// Parses row `r` of `rows` (called row `label` in errors) onto the end of every input's
    /// values; on an error some may have taken its first cells.
    fn push_row(
        &self,
        rows: &Cells,
        r: usize,
        label: usize,
        values: &mut [Values],
    ) -> Result<(), ScoreError> {
        if rows.width() != self.schema.len() {
            return Err(ScoreError::BadInput(format!(
                "row {label} has {} values, the schema {} columns",
                rows.width(),
                self.schema.len()
            )));
        }
        for (input, values) in self.inputs.iter().zip(values) {
            for &c in &input.columns {
                values.push(&self.schema[c], label, rows.cell(r, c))?;
            }
        }
        Ok(())
    }

    /// Scores rows given in schema column order, in one session run.
    pub fn score(&self, rows: &Cells) -> Result<Scored, ScoreError> {
        self.run(&self.features(rows)?)
    }

    /// One session run on parsed rows. The session reads them in place, so they are still
    /// there for the run's record.
    pub fn run(&self, features: &Features) -> Result<Scored, ScoreError> {
        let n = features.rows;
        if n == 0 {
            return Ok(Scored {
                fields: self.output_names.clone(),
                rows: Cells::with_capacity(self.output_names.len(), 0, 0),
            });
        }
        let mut feeds: Vec<(
            std::borrow::Cow<'static, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(self.inputs.len());
        for (input, values) in self.inputs.iter().zip(&features.values) {
            let value = values.tensor(n, input.columns.len())?;
            feeds.push((input.name.clone().into(), value));
        }
        let mut session = self.checkout()?;
        let started = std::time::Instant::now();
        let result = run(&mut session, feeds, &self.outputs, n);
        let per_row = started.elapsed().as_nanos() / n as u128;
        self.ns_per_row.store(
            u64::try_from(per_row).unwrap_or(u64::MAX).max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.checkin(session);
        Ok(Scored {
            fields: self.output_names.clone(),
            rows: result?,
        })
    }

    /// A run's input as stored and hashed: a typed table (`runtime::typed`) of exactly the
    /// values the session was fed.
    pub fn input_bytes(&self, features: &Features) -> Vec<u8> {
        let fields: Vec<&str> = self.schema.iter().map(|c| c.name.as_str()).collect();
        let inputs: Vec<(&str, &[usize], &Values)> = self
            .inputs
            .iter()
            .zip(&features.values)
            .map(|(i, v)| (i.name.as_str(), i.columns.as_slice(), v))
            .collect();
        super::typed::write(&fields, features.rows, &inputs)
    }

    /// What the session was fed for the cell of schema column `column` in row `row`, when
    /// that column feeds a number or Boolean input; None otherwise. Drift bins a run's cells
    /// from it, as the drift report reads them back from the run's typed table.
    pub fn parsed<'a>(
        &'a self,
        features: &'a Features,
    ) -> impl Fn(usize, usize) -> Option<Seen> + 'a {
        let mut at = vec![None; self.schema.len()];
        for (i, input) in self.inputs.iter().enumerate() {
            for (k, &c) in input.columns.iter().enumerate() {
                if let Some(slot) = at.get_mut(c) {
                    *slot = Some((i, k, input.columns.len()));
                }
            }
        }
        move |column, row| {
            let (i, k, width) = (*at.get(column)?)?;
            let index = row * width + k;
            let number = |x: f64| Some(Seen::Number(x));
            match features.values.get(i)? {
                Values::F64(v) => number(*v.get(index)?),
                Values::F32(v) => number(f64::from(*v.get(index)?)),
                Values::I32(v) => number(f64::from(*v.get(index)?)),
                Values::I64(v) => number(*v.get(index)? as f64),
                Values::Bool(v) => Some(Seen::Text(bool_text(*v.get(index)?))),
                Values::Str(_) => None,
            }
        }
    }

    /// Whether a run of `rows` rows is expected to take at most `QUICK_RUN`, going by the
    /// latest run's time per row (which charges its fixed cost to its rows: after a small
    /// run a bigger one looks slower than it is, the safe side); unknown before the first.
    /// Not while no session is idle: the run would first build one, which takes milliseconds
    /// (a run that loses the idle one to another between this check and its start still
    /// builds, rarely).
    pub fn is_quick(&self, rows: usize) -> bool {
        let per_row = self.ns_per_row.load(std::sync::atomic::Ordering::Relaxed);
        per_row > 0
            && per_row.saturating_mul(rows as u64) <= QUICK_RUN.as_nanos() as u64
            && !self.sessions().is_empty()
    }

    /// The idle sessions; a thread that panicked holding them left the list whole.
    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> Result<Session, ScoreError> {
        let idle = self.sessions().pop();
        match idle {
            Some(s) => Ok(s),
            None => build(self.onnx, &self.bytes, &self.settings),
        }
    }

    fn checkin(&self, session: Session) {
        self.sessions().push(session);
    }
}

/// Runs expected to take this long or less run where they are asked for: handing a 33-row
/// run of the demo model (~20 µs) to a blocking thread and back cost ~0.2 ms on a loaded
/// 2-core machine.
pub const QUICK_RUN: std::time::Duration = std::time::Duration::from_micros(50);

fn build(onnx: &Onnx, bytes: &[u8], s: &SessionSettings) -> Result<Session, ScoreError> {
    let level = match s.graph_optimization.as_str() {
        "disable" => GraphOptimizationLevel::Disable,
        "basic" => GraphOptimizationLevel::Level1,
        "extended" => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::Level3,
    };
    let load = |e: String| ScoreError::Load(e);
    Session::builder(&onnx.env)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(s.intra_op_threads)
        .map_err(|e| load(e.to_string()))?
        .with_inter_threads(s.inter_op_threads)
        .map_err(|e| load(e.to_string()))?
        .with_parallel_execution(s.execution_mode == "parallel")
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(level)
        .map_err(|e| load(e.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|e| load(e.to_string()))
}

/// Element type and column count of a `[N]`, `[N, 1]` or `[N, k]` tensor.
fn tensor_layout(t: &ValueType) -> Option<(TensorElementType, usize)> {
    let ValueType::Tensor { ty, shape, .. } = t else {
        return None;
    };
    let width = match &shape[..] {
        [_] => 1,
        [_, k] if *k >= 1 => usize::try_from(*k).ok()?,
        _ => return None,
    };
    Some((*ty, width))
}

/// Parses one cell; `""` is missing, which only floating-point columns can carry (as NaN).
fn parse<T: std::str::FromStr>(
    cell: &str,
    column: &Column,
    row: usize,
    missing: Option<T>,
) -> Result<T, ScoreError> {
    let cell = trim(cell);
    if cell.is_empty() {
        return missing.ok_or_else(|| {
            ScoreError::BadInput(format!(
                "row {row}: column {:?} ({}) cannot be missing",
                column.name, column.column_type
            ))
        });
    }
    cell.parse().map_err(|_| {
        ScoreError::BadInput(format!(
            "row {row}: {cell:?} is not a {} for column {:?}",
            column.column_type, column.name
        ))
    })
}

/// A cell as the session had it (`Model::parsed`): a number's exact value (a float's as its
/// double), or a Boolean's text as a typed table reads back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    Number(f64),
    Text(&'static str),
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// `str::trim`, without its Unicode scan for the usual cell that has nothing to trim.
pub(crate) fn trim(cell: &str) -> &str {
    let bytes = cell.as_bytes();
    let plain = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    if plain(bytes.first()) && plain(bytes.last()) {
        cell
    } else {
        cell.trim()
    }
}

fn parse_bool(cell: &str, column: &Column, row: usize) -> Result<bool, ScoreError> {
    match trim(cell).to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ScoreError::BadInput(format!(
            "row {row}: {other:?} is not a Boolean for column {:?}",
            column.name
        ))),
    }
}

/// A batch of rows sorted by whether they fit the schema (see `Model::fitting`).
pub struct Fitting {
    /// The rows that fit, in order, and what they parsed into.
    pub rows: Cells,
    pub features: Features,
    /// The others: row number and first bad cell.
    pub refused: Vec<(usize, ScoreError)>,
}

/// Rows parsed for a session run: per model input, its cells row by row.
#[derive(Debug, Clone, Default)]
pub struct Features {
    rows: usize,
    values: Vec<Values>,
}

impl Features {
    /// Appends another request's rows of the same model, for one batched run.
    pub fn append(&mut self, other: Features) {
        if self.rows == 0 {
            *self = other;
            return;
        }
        self.rows += other.rows;
        for (mine, theirs) in self.values.iter_mut().zip(other.values) {
            mine.append(theirs);
        }
    }
}

/// One input's cells, in its element type.
#[derive(Debug, Clone)]
pub(super) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Values {
    fn with_capacity(element: TensorElementType, n: usize) -> Result<Values, ScoreError> {
        use TensorElementType as T;
        Ok(match element {
            T::Float32 => Values::F32(Vec::with_capacity(n)),
            T::Float64 => Values::F64(Vec::with_capacity(n)),
            T::Int32 => Values::I32(Vec::with_capacity(n)),
            T::Int64 => Values::I64(Vec::with_capacity(n)),
            T::Bool => Values::Bool(Vec::with_capacity(n)),
            T::String => Values::Str(Vec::with_capacity(n)),
            other => {
                return Err(ScoreError::Load(format!(
                    "an input has element type {other}, which scoring does not support"
                )));
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Values::F32(v) => v.truncate(n),
            Values::F64(v) => v.truncate(n),
            Values::I32(v) => v.truncate(n),
            Values::I64(v) => v.truncate(n),
            Values::Bool(v) => v.truncate(n),
            Values::Str(v) => v.truncate(n),
        }
    }

    fn push(&mut self, column: &Column, r: usize, cell: &str) -> Result<(), ScoreError> {
        match self {
            Values::F32(v) => v.push(parse(cell, column, r, Some(f32::NAN))?),
            Values::F64(v) => v.push(parse(cell, column, r, Some(f64::NAN))?),
            Values::I32(v) => v.push(parse(cell, column, r, None)?),
            Values::I64(v) => v.push(parse(cell, column, r, None)?),
            Values::Bool(v) => v.push(parse_bool(cell, column, r)?),
            Values::Str(v) => v.push(cell.to_string()),
        }
        Ok(())
    }

    /// The element type's name in a typed table (`runtime::typed`).
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::F64(_) => "float64",
            Values::I32(_) => "int32",
            Values::I64(_) => "int64",
            Values::Bool(_) => "bool",
            Values::Str(_) => "string",
        }
    }

    /// How many bytes `write_le` writes.
    pub(super) fn byte_len(&self) -> usize {
        match self {
            Values::F32(v) => v.len() * 4,
            Values::F64(v) => v.len() * 8,
            Values::I32(v) => v.len() * 4,
            Values::I64(v) => v.len() * 8,
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.iter().map(|s| 4 + s.len()).sum(),
        }
    }

    /// The values as a typed table stores them: little-endian numbers, a byte per Boolean,
    /// and each string as its length (u32) and its UTF-8 bytes.
    pub(super) fn write_le(&self, out: &mut Vec<u8>) {
        fn fixed<const N: usize, T: Copy>(out: &mut Vec<u8>, v: &[T], to: fn(T) -> [u8; N]) {
            v.iter().for_each(|x| out.extend_from_slice(&to(*x)));
        }
        match self {
            Values::F32(v) => fixed(out, v, f32::to_le_bytes),
            Values::F64(v) => fixed(out, v, f64::to_le_bytes),
            Values::I32(v) => fixed(out, v, i32::to_le_bytes),
            Values::I64(v) => fixed(out, v, i64::to_le_bytes),
            Values::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            Values::Str(v) => v.iter().for_each(|s| {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
    }

    /// Reads `n` values of type `name` written by `write_le` off the front of `body`.
    pub(super) fn read_le(name: &str, n: usize, body: &mut &[u8]) -> Result<Values, String> {
        fn fixed<const N: usize, T>(
            n: usize,
            body: &mut &[u8],
            from: fn([u8; N]) -> T,
        ) -> Result<Vec<T>, String> {
            let bytes = n
                .checked_mul(N)
                .and_then(|len| body.split_at_checked(len))
                .map(|(head, tail)| {
                    *body = tail;
                    head
                })
                .ok_or_else(|| format!("{n} values do not fit in the {} bytes left", body.len()))?;
            Ok(bytes
                .chunks_exact(N)
                .map(|c| from(c.try_into().unwrap_or([0; N])))
                .collect())
        }
        Ok(match name {
            "float32" => Values::F32(fixed(n, body, f32::from_le_bytes)?),
            "float64" => Values::F64(fixed(n, body, f64::from_le_bytes)?),
            "int32" => Values::I32(fixed(n, body, i32::from_le_bytes)?),
            "int64" => Values::I64(fixed(n, body, i64::from_le_bytes)?),
            "bool" => Values::Bool(
                fixed(n, body, |[b]: [u8; 1]| b)?
                    .into_iter()
                    .map(|b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(format!("{b} is not a Boolean byte")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "string" => {
                if n > body.len() / 4 {
                    return Err(format!(
                        "{n} strings do not fit in the {} bytes left",
                        body.len()
                    ));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let (len, rest) = body
                        .split_first_chunk::<4>()
                        .ok_or_else(|| "a string's length is cut".to_string())?;
                    let (text, tail) = rest
                        .split_at_checked(u32::from_le_bytes(*len) as usize)
                        .ok_or_else(|| "a string is cut".to_string())?;
                    *body = tail;
                    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
                    v.push(text.to_string());
                }
                Values::Str(v)
            }
            other => return Err(format!("unknown element type {other:?}")),
        })
    }

    /// Writes value `i` as a cell that the scorer parses back to the very same value: floats
    /// as the shortest text of their exact value (a float's is its double's, so the drift
    /// report reads it as the value the session had), and the few that text would not give
    /// back exactly (negative zero, NaN's sign) spelled out.
    pub(super) fn push_exact(&self, i: usize, cells: &mut Cells, floats: &mut ryu_js::Buffer) {
        fn float(cells: &mut Cells, floats: &mut ryu_js::Buffer, x: f64) {
            match (x.is_nan(), x == 0.0, x.is_sign_negative()) {
                (true, _, false) => cells.push_cell("NaN"),
                (true, _, true) => cells.push_cell("-NaN"),
                (false, true, true) => cells.push_cell("-0"),
                _ => cells.push_cell(floats.format(x)),
            }
        }
        match self {
            Values::F32(v) => float(cells, floats, f64::from(v[i])),
            Values::F64(v) => float(cells, floats, v[i]),
            Values::I32(v) => cells.push_display(v[i]),
            Values::I64(v) => cells.push_display(v[i]),
            Values::Bool(v) => cells.push_cell(bool_text(v[i])),
            Values::Str(v) => cells.push_cell(&v[i]),
        }
    }

    fn append(&mut self, other: Values) {
        match (self, other) {
            (Values::F32(a), Values::F32(mut b)) => a.append(&mut b),
            (Values::F64(a), Values::F64(mut b)) => a.append(&mut b),
            (Values::I32(a), Values::I32(mut b)) => a.append(&mut b),
            (Values::I64(a), Values::I64(mut b)) => a.append(&mut b),
            (Values::Bool(a), Values::Bool(mut b)) => a.append(&mut b),
            (Values::Str(a), Values::Str(mut b)) => a.append(&mut b),
            // Features of one model have one element type per input.
            _ => {}
        }
    }

    /// The `[rows, width]` tensor, reading the values in place.
    fn tensor(
        &self,
        rows: usize,
        width: usize,
    ) -> Result<ort::session::SessionInputValue<'_>, ScoreError> {
        let shape = vec![rows as i64, width as i64];
        match self {
            Values::F32(v) => view(shape, v),
            Values::F64(v) => view(shape, v),
            Values::I32(v) => view(shape, v),
            Values::I64(v) => view(shape, v),
            Values::Bool(v) => view(shape, v),
            Values::Str(v) => Tensor::from_string_array((shape, v.as_slice()))
                .map(Into::into)
                .map_err(|e| ScoreError::Run(e.to_string())),
        }
    }
}

/// A `shape` tensor that reads `values` where they are.
fn view<T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
    shape: Vec<i64>,
    values: &[T],
) -> Result<ort::session::SessionInputValue<'_>, ScoreError> {
    TensorRef::from_array_view((shape, values))
        .map(Into::into)
        .map_err(|e| ScoreError::Run(e.to_string()))
}

/// One output's values, as ONNX Runtime returned them.
enum Returned<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    Bool(&'a [bool]),
    Str(Vec<String>),
}

impl<'a> Returned<'a> {
    fn of(value: &'a ort::value::DynValue, name: &str) -> Result<Returned<'a>, ScoreError> {
        let err = |e: ort::Error| ScoreError::Run(e.to_string());
        let ValueType::Tensor { ty, .. } = value.dtype() else {
            return Err(ScoreError::Run(format!(
                "output {name:?} is a {}",
                value.dtype()
            )));
        };
        Ok(match ty {
            TensorElementType::Float32 => Returned::F32(value.try_extract_tensor().map_err(err)?.1),
            TensorElementType::Float64 => Returned::F64(value.try_extract_tensor().map_err(err)?.1),
            TensorElementType::Int64 => Returned::I64(value.try_extract_tensor().map_err(err)?.1),
            TensorElementType::Int32 => Returned::I32(value.try_extract_tensor().map_err(err)?.1),
            TensorElementType::Bool => Returned::Bool(value.try_extract_tensor().map_err(err)?.1),
            TensorElementType::String => Returned::Str(value.try_extract_strings().map_err(err)?.1),
            other => {
                return Err(ScoreError::Run(format!(
                    "output {name:?} has element type {other}"
                )));
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Returned::F32(v) => v.len(),
            Returned::F64(v) => v.len(),
            Returned::I64(v) => v.len(),
            Returned::I32(v) => v.len(),
            Returned::Bool(v) => v.len(),
            Returned::Str(v) => v.len(),
        }
    }

    /// Writes value `i` as a cell. Floats are written as their shortest round-trip text
    /// (JavaScript's rules), so a cell parses back to the exact value ONNX Runtime produced.
    fn push(&self, i: usize, cells: &mut Cells, floats: &mut ryu_js::Buffer) {
        match self {
            Returned::F32(v) => cells.push_cell(floats.format(v[i])),
            Returned::F64(v) => cells.push_cell(floats.format(v[i])),
            Returned::I64(v) => cells.push_display(v[i]),
            Returned::I32(v) => cells.push_display(v[i]),
            Returned::Bool(v) => cells.push_cell(bool_text(v[i])),
            Returned::Str(v) => cells.push_cell(&v[i]),
        }
    }
}

/// Runs the session and lays every output's columns side by side into `n` rows of text.
fn run(
    session: &mut Session,
    feeds: Vec<(
        std::borrow::Cow<'static, str>,
        ort::session::SessionInputValue<'_>,
    )>,
    outputs: &[Output],
    n: usize,
) -> Result<Cells, ScoreError> {
    let result = session
        .run(feeds)
        .map_err(|e| ScoreError::Run(e.to_string()))?;
    let mut returned = Vec::with_capacity(outputs.len());
    for out in outputs {
        let values = Returned::of(&result[out.name.as_str()], &out.name)?;
        if values.len() != n * out.width {
            return Err(ScoreError::Run(format!(
                "output {:?} has {} values for {n} rows of {} columns",
                out.name,
                values.len(),
                out.width
            )));
        }
        returned.push(values);
    }
    let width: usize = outputs.iter().map(|o| o.width).sum();
    let mut cells = Cells::with_capacity(width, n, n * width * 12);
    let mut floats = ryu_js::Buffer::new();
    for r in 0..n {
        for (out, values) in outputs.iter().zip(&returned) {
            for i in r * out.width..(r + 1) * out.width {
                values.push(i, &mut cells, &mut floats);
            }
        }
        cells.end_row();
    }
    Ok(cells)
}

/// A run's rows as stored and hashed: the RFC 8785 canonical JSON of
/// `{"fields": [...], "rows": [[...], ...]}`, written directly (keys are already in order and
/// every value is a string), byte for byte what `log::canonical` makes of the same object.
pub fn table_bytes<S: AsRef<str>>(fields: &[S], rows: &Cells) -> Vec<u8> {
    use crate::log::canonical::{needs_escape, write_string};
    // Cells are mostly numbers: when none needs an escape (one scan of all of them), each is
    // copied between its quotes as it is.
    let plain = !needs_escape(rows.text().as_bytes());
    let names: usize = fields.iter().map(|f| f.as_ref().len() + 3).sum();
    let quotes = rows.len() * (rows.width() * 3 + 3);
    let mut out = Vec::with_capacity(32 + names + rows.text().len() + quotes);
    out.extend_from_slice(b"{\"fields\":[");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(&mut out, f.as_ref());
    }
    out.extend_from_slice(b"],\"rows\":[");
    let mut cells = rows.cells();
    for i in 0..rows.len() {
        out.extend_from_slice(if i > 0 { b",[" } else { b"[" });
        for (j, cell) in cells.by_ref().take(rows.width()).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            if plain {
                out.push(b'"');
                out.extend_from_slice(cell.as_bytes());
                out.push(b'"');
            } else {
                write_string(&mut out, cell);
            }
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(name: &str) -> (Vec<u8>, Value) {
        let bytes = std::fs::read(format!("fixtures/models/{name}.onnx")).unwrap();
        let expected =
            std::fs::read_to_string(format!("fixtures/models/{name}.expected.json")).unwrap();
        (bytes, serde_json::from_str(&expected).unwrap())
    }

    fn schema(fields: &Value) -> Vec<Column> {
        fields
            .as_array()
            .unwrap()
            .iter()
            .map(|f| Column {
                name: f.as_str().unwrap().into(),
                column_type: ColumnType::Float32,
            })
            .collect()
    }

    fn rows(v: &Value) -> Vec<Vec<String>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    fn cells(rows: &[Vec<String>]) -> Cells {
        Cells::from_rows(rows.first().map_or(0, Vec::len), rows).unwrap()
    }

    /// Output cells are shortest round-trip f32 text, so they parse back to the exact value.
    fn max_diff(got: &Cells, col: usize, want: impl Iterator<Item = f64>) -> f64 {
        got.rows()
            .zip(want)
            .map(|(r, w)| (f64::from(r.get(col).unwrap().parse::<f32>().unwrap()) - w).abs())
            .fold(0.0, f64::max)
    }

    /// A fixture model loaded with the default settings, and its expected outputs.
    fn fixture_model(name: &str, target: &str) -> (Model, Value) {
        let onnx = super::super::onnx::load(None).unwrap();
        let (bytes, expected) = fixture(name);
        let fields = schema(&expected["fields"]);
        let model = Model::load(
            onnx,
            bytes,
            fields,
            Some(target),
            SessionSettings::default(),
        )
        .unwrap();
        (model, expected)
    }

    #[test]
    fn the_classifier_scores_as_the_python_runtime_does() {
        let onnx = super::super::onnx::load(None).unwrap();
        let (bytes, expected) = fixture("wine_classifier");
        let natural = Model::load(
            onnx,
            bytes.clone(),
            schema(&expected["fields"]),
            None,
            SessionSettings::default(),
        )
        .unwrap();
        assert_eq!(
            natural.output_names(),
            [
                "label",
                "probabilities.0",
                "probabilities.1",
                "probabilities.2"
            ]
        );
        let scored = natural.score(&cells(&rows(&expected["rows"]))).unwrap();
        let labels: Vec<String> = expected["outputs"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            scored
                .rows
                .rows()
                .map(|r| r.get(0).unwrap().to_string())
                .collect::<Vec<_>>(),
            labels
        );

        // H2O's naming: one probability column per class, `<target>.<class>`.
        let (model, _) = fixture_model("wine_classifier", "cultivar");
        assert_eq!(
            model.output_names(),
            ["cultivar.0", "cultivar.1", "cultivar.2"]
        );
        assert!(
            model
                .output_schema()
                .iter()
                .all(|c| c.column_type == ColumnType::Float32)
        );
        let scored = model.score(&cells(&rows(&expected["rows"]))).unwrap();
        for class in 0..3 {
            let want = expected["outputs"]["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[class].as_f64().unwrap());
            assert_eq!(max_diff(&scored.rows, class, want), 0.0, "bit for bit");
        }
        assert!(model.score(&Cells::default()).unwrap().rows.is_empty());
    }

    #[test]
    fn the_forest_regressor_scores_as_the_python_runtime_does() {
        let (model, expected) = fixture_model("diabetes_forest", "progression");
        assert_eq!(model.output_names(), ["progression"]);
        let scored = model.score(&cells(&rows(&expected["rows"]))).unwrap();
        let want = expected["outputs"]["variable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_f64().unwrap());
        assert_eq!(
            max_diff(&scored.rows, 0, want),
            0.0,
            "bit for bit: {:?}",
            scored.rows
        );
    }

    #[test]
    fn cells_that_do_not_fit_the_schema_are_bad_input() {
        let onnx = super::super::onnx::load(None).unwrap();
        let (bytes, expected) = fixture("wine_classifier");
        let mut cols = schema(&expected["fields"]);
        let model = Model::load(
            onnx,
            bytes.clone(),
            cols.clone(),
            None,
            SessionSettings::default(),
        )
        .unwrap();
        let mut bad = rows(&expected["rows"]);
        bad[1][2] = "twelve".into();
        let err = model.score(&cells(&bad)).unwrap_err();
        assert!(
            matches!(&err, ScoreError::BadInput(m) if m.contains("row 1") && m.contains("\"ash\"")),
            "{err}"
        );
        let mut narrow = rows(&expected["rows"]);
        narrow.iter_mut().for_each(|r| drop(r.pop()));
        let err = model.score(&cells(&narrow)).unwrap_err();
        assert!(
            matches!(&err, ScoreError::BadInput(m) if m.contains("row 0 has 12 values")),
            "{err}"
        );
        // A missing float is NaN, not an error.
        let mut gap = rows(&expected["rows"]);
        gap[0][0] = String::new();
        assert!(model.score(&cells(&gap)).is_ok());
        // A schema without a column the graph needs cannot be loaded.
        cols.retain(|c| c.name != "hue");
        let err = Model::load(onnx, bytes, cols, None, SessionSettings::default())
            .err()
            .unwrap();
        assert!(
            matches!(&err, ScoreError::Load(m) if m.contains("hue")),
            "{err}"
        );
    }

    #[test]
    fn a_run_is_quick_only_once_a_run_has_been_timed() {
        let (model, expected) = fixture_model("wine_classifier", "cultivar");
        assert!(!model.is_quick(1), "nothing timed yet");
        model.score(&cells(&rows(&expected["rows"]))).unwrap();
        assert!(model.is_quick(0));
        assert!(!model.is_quick(usize::MAX));
        let busy = model.checkout().unwrap();
        assert!(!model.is_quick(0), "a run now would build a session first");
        model.checkin(busy);
        assert!(model.is_quick(0));
    }

    #[test]
    fn appended_features_score_as_their_rows_together() {
        let (model, expected) = fixture_model("wine_classifier", "cultivar");
        let all = cells(&rows(&expected["rows"]));
        let third = all.len() / 3;
        let mut joined = Features::default();
        joined.append(model.features(&all.slice(0..third)).unwrap());
        joined.append(model.features(&all.slice(third..all.len())).unwrap());
        assert_eq!(model.run(&joined).unwrap(), model.score(&all).unwrap());
        assert_eq!(model.run(&Features::default()).unwrap().rows.len(), 0);
    }

    #[test]
    fn parsed_cells_are_found_by_column_and_row() {
        let (model, expected) = fixture_model("wine_classifier", "cultivar");
        let all = cells(&rows(&expected["rows"]));
        let features = model.features(&all).unwrap();
        let parsed = model.parsed(&features);
        for (r, row) in all.rows().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let x: f32 = cell.parse().unwrap();
                assert_eq!(parsed(c, r), Some(Seen::Number(f64::from(x))), "{cell}");
            }
        }
        assert_eq!(parsed(all.width(), 0), None);
        assert_eq!(parsed(0, all.len()), None);
    }

    #[test]
    fn a_typed_input_reads_back_as_rows_the_model_reads_as_the_same_input() {
        let (model, expected) = fixture_model("wine_classifier", "cultivar");
        let mut all = rows(&expected["rows"]);
        // A missing float, padded and long-winded cells: the stored values are what counts.
        all[0][3] = "".into();
        all[1][4] = " 100.000 ".into();
        all[2][5] = "-0".into();
        let features = model.features(&cells(&all)).unwrap();
        let bytes = model.input_bytes(&features);
        let (fields, back) = super::super::typed::read(&bytes).unwrap();
        let names: Vec<&str> = model.schema().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(fields, names);
        assert_eq!(
            (back.cell(0, 3), back.cell(1, 4), back.cell(2, 5)),
            ("NaN", "100", "-0")
        );
        let again = model.input_bytes(&model.features(&back).unwrap());
        assert_eq!(again, bytes);
        assert_eq!(model.score(&back).unwrap(), model.run(&features).unwrap());
    }

    #[test]
    fn fitting_rows_are_parsed_and_the_others_set_aside() {
        let (model, expected) = fixture_model("wine_classifier", "cultivar");
        let all = rows(&expected["rows"]);
        let mut mixed = all.clone();
        // A bad cell after good ones in its row: those must not stay in the features.
        mixed[1][5] = "five".into();
        mixed[3][12] = "".into();
        mixed[3][0] = "x".into();
        let fitting = model.fitting(cells(&mixed), 100).unwrap();
        let refused: Vec<usize> = fitting.refused.iter().map(|(r, _)| *r).collect();
        assert_eq!(refused, [101, 103]);
        let good: Vec<Vec<String>> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| ![1, 3].contains(i))
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(fitting.rows, cells(&good));
        assert_eq!(
            model.run(&fitting.features).unwrap(),
            model.score(&cells(&good)).unwrap()
        );
    }

    #[test]
    fn trim_is_str_trim() {
        for cell in ["1.5", " 1.5", "1.5\t", "", " ", "\u{a0}2\u{2003}", "x", "é"] {
            assert_eq!(trim(cell), cell.trim(), "{cell:?}");
        }
    }

    #[test]
    fn table_bytes_are_the_canonical_json_of_the_table() {
        let fields = ["a", "é\u{1}\"", "\u{2028}"];
        let rows = vec![
            vec!["1.5".to_string(), "".into(), "\\\n".into()],
            vec!["x\u{7f}".into(), "😀".into(), "</script>".into()],
        ];
        let value = serde_json::json!({"rows": rows, "fields": fields});
        assert_eq!(
            table_bytes(&fields, &cells(&rows)),
            crate::log::canonical::to_vec(&value).unwrap()
        );
        // Without a cell to escape, the fast path.
        let plain = vec![vec!["1.5".to_string(), "".into(), "é".into()]];
        let value = serde_json::json!({"rows": plain, "fields": fields});
        assert_eq!(
            table_bytes(&fields, &cells(&plain)),
            crate::log::canonical::to_vec(&value).unwrap()
        );
        let empty: [&str; 0] = [];
        assert_eq!(
            table_bytes(&empty, &Cells::default()),
            br#"{"fields":[],"rows":[]}"#
        );
    }
}
