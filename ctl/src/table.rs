//! Plain aligned text tables, like kubectl's.

#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn header<S: Into<String>>(&mut self, cols: impl IntoIterator<Item = S>) {
        self.rows
            .insert(0, cols.into_iter().map(Into::into).collect());
    }

    pub fn row<S: Into<String>>(&mut self, cols: impl IntoIterator<Item = S>) {
        self.rows.push(cols.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let ncols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..ncols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == row.len() {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            out.push_str(line.join("   ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let mut t = super::Table::default();
        t.row(["a", "bbb", "c"]);
        t.header(["NAME", "X", "Y"]);
        assert_eq!(t.render(), "NAME   X     Y\na      bbb   c\n");
    }
}
