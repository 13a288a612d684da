//! Rows of text cells in one buffer. A scored request of a thousand rows carries some
//! seventeen thousand cells in and out; as a `String` each, allocating and freeing them was a
//! fifth of the scorer's time. Here a table is one text buffer and one list of cell ends.

use std::ops::Range;

/// A rectangular table of text cells, row by row.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Cells {
    width: usize,
    rows: usize,
    text: String,
    /// Where each cell ends in `text`, row by row.
    ends: Vec<usize>,
}

impl Cells {
    /// An empty table of `width` columns, with room for `rows` rows of `bytes` bytes of text.
    pub fn with_capacity(width: usize, rows: usize, bytes: usize) -> Cells {
        Cells {
            width,
            rows: 0,
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(width * rows),
        }
    }

    /// Rows of `width` cells each; `None` when one has another width.
    pub fn from_rows<R, S>(width: usize, rows: impl IntoIterator<Item = R>) -> Option<Cells>
    where
        R: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut cells = Cells::with_capacity(width, 0, 0);
        for row in rows {
            for cell in row {
                cells.push_cell(cell.as_ref());
            }
            if !cells.end_row() {
                return None;
            }
        }
        Some(cells)
    }

    /// `rows` rows of `width` cells, each ending where `ends` says in `text`; `None` when
    /// they do not add up.
    pub fn from_parts(width: usize, rows: usize, text: String, ends: Vec<usize>) -> Option<Cells> {
        let fits = ends.len() == width * rows
            && ends.last().is_none_or(|&e| e == text.len())
            && ends.windows(2).all(|w| w[0] <= w[1])
            && ends.iter().all(|&e| text.is_char_boundary(e));
        fits.then_some(Cells {
            width,
            rows,
            text,
            ends,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends a cell to the row being built.
    pub fn push_cell(&mut self, cell: &str) {
        self.text.push_str(cell);
        self.ends.push(self.text.len());
    }

    /// Appends a cell written by `Display`.
    pub fn push_display(&mut self, cell: impl std::fmt::Display) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(self.text, "{cell}");
        self.ends.push(self.text.len());
    }

    /// Closes the row being built: true when it had `width` cells; otherwise its cells are
    /// taken back and the table is as before.
    pub fn end_row(&mut self) -> bool {
        let start = self.rows * self.width;
        if self.ends.len() - start == self.width {
            self.rows += 1;
            return true;
        }
        self.ends.truncate(start);
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        false
    }

    /// Appends a row of `width` cells.
    pub fn push_row<S: AsRef<str>>(&mut self, row: impl IntoIterator<Item = S>) -> bool {
        for cell in row {
            self.push_cell(cell.as_ref());
        }
        self.end_row()
    }

    /// Cell `c` of row `r`.
    pub fn cell(&self, r: usize, c: usize) -> &str {
        self.at(r * self.width + c)
    }

    fn at(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// Row `r`, if there is one.
    pub fn row(&self, r: usize) -> Option<Row<'_>> {
        (r < self.rows).then(|| Row {
            cells: self,
            range: r * self.width..(r + 1) * self.width,
        })
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> {
        (0..self.rows).map(|r| Row {
            cells: self,
            range: r * self.width..(r + 1) * self.width,
        })
    }

    /// Appends `other`'s rows, of this table's width (rows of one model); an empty table
    /// takes them as they are.
    pub fn append(&mut self, other: Cells) {
        if self.rows == 0 {
            *self = other;
            return;
        }
        debug_assert_eq!(self.width, other.width);
        let base = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        self.rows += other.rows;
    }

    /// Rows `range`, as a table of their own.
    pub fn slice(&self, range: Range<usize>) -> Cells {
        let cells = range.start * self.width..range.end * self.width;
        let from = if cells.start == 0 {
            0
        } else {
            self.ends[cells.start - 1]
        };
        let to = if cells.end == 0 {
            0
        } else {
            self.ends[cells.end - 1]
        };
        Cells {
            width: self.width,
            rows: range.len(),
            text: self.text[from..to].to_string(),
            ends: self.ends[cells].iter().map(|e| e - from).collect(),
        }
    }

    /// Each row of `left` followed by the same row of `right`.
    pub fn beside(left: &Cells, right: &Cells) -> Cells {
        let rows = left.rows.min(right.rows);
        let mut out = Cells::with_capacity(
            left.width + right.width,
            rows,
            left.text.len() + right.text.len(),
        );
        for (l, r) in left.rows().zip(right.rows()) {
            out.push_row(l.iter().chain(r.iter()));
        }
        out
    }

    /// The text of every cell, back to back: one scan of it tells whether any needs escaping.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every cell, row by row, in one pass.
    pub fn cells(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(move |(from, &to)| &self.text[from..to])
    }
}

/// One row of a table.
#[derive(Clone)]
pub struct Row<'a> {
    cells: &'a Cells,
    range: Range<usize>,
}

impl<'a> Row<'a> {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Cell `c`, if the row has it.
    pub fn get(&self, c: usize) -> Option<&'a str> {
        (c < self.range.len()).then(|| self.cells.at(self.range.start + c))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + Clone + use<'a> {
        let cells = self.cells;
        self.range.clone().map(move |i| cells.at(i))
    }
}

impl PartialEq for Row<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::fmt::Debug for Cells {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_list().entries(self.rows()).finish()
    }
}

/// As an array of rows, each an array of strings.
impl serde::Serialize for Cells {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.rows())
    }
}

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// From an array of rows of strings, all of one width (that of the first row).
impl<'de> serde::Deserialize<'de> for Cells {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cells, D::Error> {
        struct Table;
        impl<'de> serde::de::Visitor<'de> for Table {
            type Value = Cells;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of rows of strings, all of one width")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Cells, A::Error> {
                let mut cells = Cells::default();
                while a.next_element_seed(RowSeed(&mut cells))?.is_some() {}
                Ok(cells)
            }
        }
        d.deserialize_seq(Table)
    }
}

/// Reads one row onto the end of a table; the first row sets the width.
struct RowSeed<'a>(&'a mut Cells);

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row of strings")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let cells = self.0;
        let first = cells.rows == 0;
        let start = cells.ends.len();
        while a.next_element_seed(CellSeed(&mut cells.text))?.is_some() {
            cells.ends.push(cells.text.len());
        }
        if first {
            cells.width = cells.ends.len() - start;
        }
        if cells.end_row() {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "row {} does not have {} cells",
                cells.rows, cells.width
            )))
        }
    }
}

/// Reads a string onto the end of a text buffer, without a `String` of its own.
pub struct CellSeed<'a>(pub &'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for CellSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CellSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[&[&str]]) -> Cells {
        Cells::from_rows(rows.first().map_or(0, |r| r.len()), rows.iter().copied()).unwrap()
    }

    #[test]
    fn cells_are_where_their_rows_put_them() {
        let t = table(&[&["1", "", "ab"], &["é", "x", ""]]);
        assert_eq!((t.len(), t.width()), (2, 3));
        assert_eq!(t.cell(0, 2), "ab");
        assert_eq!(t.cell(1, 0), "é");
        assert_eq!(t.cell(0, 1), "");
        let cells: Vec<&str> = t.cells().collect();
        assert_eq!(cells, ["1", "", "ab", "é", "x", ""]);
        let row = t.row(1).unwrap();
        assert_eq!(row.iter().collect::<Vec<_>>(), ["é", "x", ""]);
        assert_eq!(row.get(3), None);
        assert!(t.row(2).is_none());
        assert!(Cells::from_rows(2, [vec!["a", "b"], vec!["c"]]).is_none());
    }

    #[test]
    fn a_short_or_long_row_is_taken_back() {
        let mut t = table(&[&["a", "b"]]);
        t.push_cell("c");
        assert!(!t.end_row());
        t.push_cell("d");
        t.push_cell("e");
        t.push_cell("f");
        assert!(!t.end_row());
        assert_eq!(t, table(&[&["a", "b"]]));
        assert!(t.push_row(["g", "h"]));
        assert_eq!(t, table(&[&["a", "b"], &["g", "h"]]));
    }

    #[test]
    fn append_slice_and_beside_keep_every_cell() {
        let mut t = Cells::default();
        t.append(table(&[&["a", "b"], &["c", ""]]));
        t.append(table(&[&["", "f"]]));
        assert_eq!(t, table(&[&["a", "b"], &["c", ""], &["", "f"]]));
        assert_eq!(t.slice(1..3), table(&[&["c", ""], &["", "f"]]));
        assert_eq!(t.slice(0..1), table(&[&["a", "b"]]));
        assert!(t.slice(2..2).is_empty());
        let ids = table(&[&["1"], &["2"], &["3"]]);
        assert_eq!(
            Cells::beside(&ids, &t),
            table(&[&["1", "a", "b"], &["2", "c", ""], &["3", "", "f"]])
        );
    }

    #[test]
    fn serde_round_trips_and_refuses_ragged_rows() {
        let t = table(&[&["a\"", "1"], &["", "\u{2028}"]]);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"[["a\"","1"],["","\u2028"]]"#.replace("\\u2028", "\u{2028}")
        );
        assert_eq!(serde_json::from_str::<Cells>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Cells>(r#"[["a"],["b","c"]]"#).is_err());
        assert!(serde_json::from_str::<Cells>(r#"[["a"],[1]]"#).is_err());
        assert!(serde_json::from_str::<Cells>("[]").unwrap().is_empty());
    }
}
