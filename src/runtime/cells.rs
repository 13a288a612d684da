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
            if !cells.push_row(row) {
                return None;
            }
        }
        Some(cells)
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
        write_display(&mut self.text, cell);
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
        cell(&self.text, &self.ends, i)
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
        let (from, to) = (start(&self.ends, cells.start), start(&self.ends, cells.end));
        Cells {
            width: self.width,
            rows: range.len(),
            text: self.text[from..to].to_string(),
            ends: self.ends[cells].iter().map(|e| e - from).collect(),
        }
    }

    /// Splits off rows `at..` as a table of their own, leaving rows `..at`; from row 0 the
    /// whole table moves, without a copy.
    pub fn split_off(&mut self, at: usize) -> Cells {
        if at == 0 {
            return std::mem::take(self);
        }
        let tail = self.slice(at..self.rows);
        let cells = at * self.width;
        self.text.truncate(start(&self.ends, cells));
        self.ends.truncate(cells);
        self.rows = at;
        tail
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

/// Writes `value` onto the end of `text`, without a `String` of its own.
fn write_display(text: &mut String, value: impl std::fmt::Display) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(text, "{value}");
}

/// Where cell `i` starts in the text: where the one before it ends.
fn start(ends: &[usize], i: usize) -> usize {
    i.checked_sub(1).map_or(0, |before| ends[before])
}

/// Cell `i` of a text buffer and its cell ends.
fn cell<'a>(text: &'a str, ends: &[usize], i: usize) -> &'a str {
    &text[start(ends, i)..ends[i]]
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

/// From an array of rows of text cells (read as `Sent` reads them), all of one width.
impl<'de> serde::Deserialize<'de> for Cells {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cells, D::Error> {
        let sent = Sent::deserialize(d)?;
        let width = sent.rows.first().copied().unwrap_or(0);
        sent.select(width, &(0..width).collect::<Vec<_>>(), &[])
            .map(|(cells, _)| cells)
            .map_err(serde::de::Error::custom)
    }
}

/// Rows as a JSON body sends them, read straight into one text buffer: strings as they are,
/// numbers and booleans as JSON writes them, null as missing. Rows may have any length and a
/// cell may be an array or an object; `select` refuses both, with their row, once the
/// fields are known (in a request they may come after the rows).
#[derive(Default)]
pub struct Sent {
    text: String,
    /// Where each cell ends in `text`.
    ends: Vec<usize>,
    /// How many cells precede the end of each row.
    rows: Vec<usize>,
    /// The cells that are not text, by index, and what they are.
    not: Vec<(usize, &'static str)>,
}

impl Sent {
    /// The cells of every row at `columns` (the model's, in schema order) and at `copied`
    /// (those echoed in the answer), where a row has `fields` cells. A row is checked as it
    /// comes: its length, then its copied cells, then its model cells; the first fault is
    /// the error.
    pub fn select(
        self,
        fields: usize,
        columns: &[usize],
        copied: &[usize],
    ) -> Result<(Cells, Cells), String> {
        let n = self.rows.len();
        let whole = columns.len() == fields && columns.iter().enumerate().all(|(i, &c)| i == c);
        let even = (0..n).all(|r| self.rows[r] == (r + 1) * fields);
        let mut copies = Cells::with_capacity(copied.len(), n, 0);
        if whole && even && self.not.is_empty() && copied.is_empty() {
            // The usual request: fields in schema order and nothing else; the buffer is the table.
            for _ in 0..n {
                copies.end_row();
            }
            let cells = Cells {
                width: fields,
                rows: n,
                text: self.text,
                ends: self.ends,
            };
            return Ok((cells, copies));
        }
        let mut rows = Cells::with_capacity(columns.len(), n, self.text.len());
        let mut start = 0;
        for (r, &end) in self.rows.iter().enumerate() {
            if end - start != fields {
                return Err(format!(
                    "row {r} has {} values for {fields} fields",
                    end - start
                ));
            }
            for (at, out) in [(copied, &mut copies), (columns, &mut rows)] {
                for &c in at {
                    let i = start + c;
                    if let Ok(k) = self.not.binary_search_by_key(&i, |(i, _)| *i) {
                        return Err(format!(
                            "row {r}: a cell must be a string, got {}",
                            self.not[k].1
                        ));
                    }
                    out.push_cell(cell(&self.text, &self.ends, i));
                }
                out.end_row();
            }
            start = end;
        }
        Ok((rows, copies))
    }
}

impl<'de> serde::Deserialize<'de> for Sent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sent, D::Error> {
        struct Rows;
        impl<'de> serde::de::Visitor<'de> for Rows {
            type Value = Sent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of rows")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Sent, A::Error> {
                let mut sent = Sent::default();
                while a.next_element_seed(SentRow(&mut sent))?.is_some() {}
                Ok(sent)
            }
        }
        d.deserialize_seq(Rows)
    }
}

/// One row, read onto the end of the rows sent.
struct SentRow<'a>(&'a mut Sent);

impl<'de> serde::de::DeserializeSeed<'de> for SentRow<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SentRow<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row (an array of cells)")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let sent = self.0;
        while let Some(not) = a.next_element_seed(SentCell(&mut sent.text))? {
            if let Some(what) = not {
                sent.not.push((sent.ends.len(), what));
            }
            sent.ends.push(sent.text.len());
        }
        sent.rows.push(sent.ends.len());
        Ok(())
    }
}

/// One cell, its text written onto the end of the buffer; what it is when it is not text.
struct SentCell<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for SentCell<'_> {
    type Value = Option<&'static str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SentCell<'_> {
    type Value = Option<&'static str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a cell")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        self.0.push_str(v);
        Ok(None)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        self.0.push_str(if v { "true" } else { "false" });
        Ok(None)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        write_display(self.0, v);
        Ok(None)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        write_display(self.0, v);
        Ok(None)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As serde_json writes a parsed number back.
        self.0.push_str(&serde_json::Value::from(v).to_string());
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Some("an array"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Some("an object"))
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
        let mut head = t.clone();
        assert_eq!(head.split_off(1), table(&[&["c", ""], &["", "f"]]));
        assert_eq!(head, table(&[&["a", "b"]]));
        assert_eq!(head.split_off(1), Cells::with_capacity(2, 0, 0));
        assert_eq!(head.split_off(0), table(&[&["a", "b"]]));
        assert!(head.is_empty());
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
        assert!(serde_json::from_str::<Cells>(r#"[["a"],[{}]]"#).is_err());
        let number = serde_json::from_str::<Cells>(r#"[["a"],[1]]"#).unwrap();
        assert_eq!(number.cell(1, 0), "1");
        assert!(serde_json::from_str::<Cells>("[]").unwrap().is_empty());
    }

    #[test]
    fn sent_rows_keep_their_own_widths_and_cells() {
        let sent: Sent =
            serde_json::from_str(r#"[["1"],["2",3,null,true],[],[{"x":1}],[-4,2.5,"é\"",[]]]"#)
                .unwrap();
        assert_eq!(sent.rows, [1, 5, 5, 6, 10]);
        let cells: Vec<&str> = (0..sent.ends.len())
            .map(|i| cell(&sent.text, &sent.ends, i))
            .collect();
        assert_eq!(
            cells,
            ["1", "2", "3", "", "true", "", "-4", "2.5", "é\"", ""]
        );
        assert_eq!(sent.not, [(5, "an object"), (9, "an array")]);
    }

    #[test]
    fn sent_rows_are_laid_onto_the_schema_and_the_first_fault_is_the_error() {
        let sent = |rows: &str| serde_json::from_str::<Sent>(rows).unwrap();
        // Fields in schema order and nothing copied: the buffer is the table.
        let (rows, copies) = sent(r#"[["1","2"],["3","4"]]"#)
            .select(2, &[0, 1], &[])
            .unwrap();
        assert_eq!(rows, table(&[&["1", "2"], &["3", "4"]]));
        assert_eq!((copies.len(), copies.width()), (2, 0));
        // Reordered, one copied, and an unknown field's object ignored.
        let (rows, copies) = sent(r#"[["1","2",{}],["3","4",[]]]"#)
            .select(3, &[1, 0], &[0])
            .unwrap();
        assert_eq!(rows, table(&[&["2", "1"], &["4", "3"]]));
        assert_eq!(copies, table(&[&["1"], &["3"]]));
        for (rows, copied, wanted) in [
            (
                r#"[["1","2"],["3"]]"#,
                &[][..],
                "row 1 has 1 values for 2 fields",
            ),
            (
                r#"[["1",{}],["3"]]"#,
                &[],
                "row 0: a cell must be a string, got an object",
            ),
            (
                r#"[["1","2"],[[],"4"]]"#,
                &[0],
                "row 1: a cell must be a string, got an array",
            ),
        ] {
            let e = sent(rows).select(2, &[0, 1], copied).err().unwrap();
            assert_eq!(e, wanted, "{rows}");
        }
    }
}
