//! Terminal tables for `get` and `describe` (the columns themselves are in [`crate::api::columns`]).

/// Left-aligned columns three spaces apart.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(|i| rows.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_left_aligned_three_spaces_apart() {
        assert_eq!(render(&[vec!["A".into(), "B".into()], vec!["long".into(), "x".into()]]), "A      B\nlong   x\n");
    }
}
