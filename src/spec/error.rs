//! What can go wrong reading a cluster spec, and how a problem is pinned to a line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a cluster spec could not be turned into a [`super::ClusterSpec`].
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("reading cluster spec {}", path.display())]
    Io {
        /// The spec file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// One problem in the spec, at a 1-based line and column of the file.
    #[error("{}:{line}:{column}: {field} {message}", path.display())]
    Invalid {
        /// The spec file, as it was named to [`super::ClusterSpec::load`] or `parse`.
        path: PathBuf,
        /// 1-based line of the offending value (or of the table header a field is missing from).
        line: usize,
        /// 1-based column, counted in characters.
        column: usize,
        /// Where in the spec: `cluster.name`, `workers[0].count`, `network.subnets[1].cidr`.
        field: String,
        /// What is wrong and, where that helps, what would be right.
        message: String,
    },
    /// Several problems, each an [`SpecError::Invalid`], in document order; displayed one per line.
    #[error("{}", DisplayLines(.0))]
    Many(Vec<SpecError>),
}

impl SpecError {
    /// The process exit code for a spec that cannot be used: 2, the usage-error code.
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// Every single problem: the error itself, or the members of [`SpecError::Many`].
    pub fn problems(&self) -> Vec<&SpecError> {
        match self {
            SpecError::Many(all) => all.iter().collect(),
            one => vec![one],
        }
    }
}

struct DisplayLines<'a>(&'a [SpecError]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A problem found while validating, not yet placed on a line: a byte span in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub span: Range<usize>,
    pub field: String,
    pub message: String,
}

/// The problems found in one spec, gathered so that all of them can be reported at once.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem with `field` at `span`.
    pub fn add(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            span,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem about a spanned value.
    pub fn at<T>(
        &mut self,
        value: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.add(value.span(), field, message);
    }

    /// Turns the problems into one error, sorted into document order; `None` when there are none.
    pub fn into_error(self, path: &Path, text: &str) -> Option<SpecError> {
        let mut located: Vec<(usize, usize, Problem)> = self
            .0
            .into_iter()
            .map(|p| {
                let (line, column) = line_column(text, p.span.start);
                (line, column, p)
            })
            .collect();
        located.sort_by_key(|a| (a.0, a.1));
        located.dedup_by(|a, b| {
            a.0 == b.0 && a.1 == b.1 && a.2.field == b.2.field && a.2.message == b.2.message
        });
        let mut errors: Vec<SpecError> = located
            .into_iter()
            .map(|(line, column, p)| SpecError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                field: p.field,
                message: p.message,
            })
            .collect();
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(SpecError::Many(errors)),
        }
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns a TOML syntax error into a problem. The document cannot be parsed, so the field is
/// guessed from the text: the table header above the error and the key on its line.
pub(crate) fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    let span = error.span().unwrap_or(0..0);
    let mut message = error.message().to_owned();
    if message == "duplicate key" {
        // The span is the repeated key; naming it saves a search.
        if let Some(key) = text
            .get(span.clone())
            .filter(|k| !k.is_empty() && !k.contains('\n'))
        {
            message = format!("duplicate key `{key}`");
        }
    }
    Problem {
        field: field_on_line(text, span.start).unwrap_or_else(|| "toml".to_owned()),
        span,
        message: format!("syntax error: {message}"),
    }
}

/// The field written on the line holding byte `offset`, read from the raw text: the last table
/// header before it (`[[workers]]` counted, so the second one is `workers[1]`) and the bare key at
/// the start of the line. `None` when the line holds neither.
fn field_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let bare = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                !part.trim().is_empty()
                    && part
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
    };
    let dotted = |s: &str| s.split('.').map(str::trim).collect::<Vec<_>>().join(".");

    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for earlier in text[..line_start].lines().map(str::trim) {
        if let Some(name) = earlier
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            if bare(name) {
                let name = dotted(name);
                let index = arrays.entry(name.clone()).or_insert(0);
                table = format!("{name}[{index}]");
                *index += 1;
            }
        } else if let Some(name) = earlier.strip_prefix('[').and_then(|r| r.split(']').next())
            && bare(name)
        {
            table = dotted(name);
        }
    }

    if let Some(header) = line.strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default();
        return bare(name).then(|| dotted(name));
    }
    let key = line.split('=').next().unwrap_or_default().trim();
    let key = key.split_whitespace().next().unwrap_or_default();
    if !bare(key) {
        return (!table.is_empty()).then_some(table);
    }
    let key = dotted(key);
    Some(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    })
}

/// Turns a serde error (unknown field, wrong type) into a problem named after the field it is on.
pub(crate) fn shape_problem(tree: &Spanned<DeTable<'_>>, error: &toml::de::Error) -> Problem {
    let span = error.span().unwrap_or(0..0);
    let field = field_at(tree, span.start).unwrap_or_else(|| "toml".to_owned());
    Problem {
        span,
        field,
        message: reword(error.message()),
    }
}

/// Says serde's "invalid type: X, expected Y" the way the rest of the messages read: what the
/// field must be, then what it got.
fn reword(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let Some((got, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    if got.ends_with(" as i128") || got.ends_with(" as u128") {
        let number = got
            .trim_end_matches(" as i128")
            .trim_end_matches(" as u128");
        return format!("is out of range, got {number}");
    }
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        "a boolean" => "a boolean (true or false)",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    let got = got.replace("sequence", "array").replace("map", "table");
    format!("must be {expected}, got {got}")
}

/// The field path (`workers[0].count`) of the key or value at byte `offset`, if any.
pub(crate) fn field_at(tree: &Spanned<DeTable<'_>>, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    if find_in_table(tree.get_ref(), offset, &mut path) {
        Some(render_path(&path))
    } else {
        None
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !k.is_empty()
                {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start == offset || (span.start <= offset && offset < span.end)
}

/// Looks for `offset` among the entries of a table, children before parents so that the most
/// specific field wins (a header table's span is only its `[header]`, so children never overlap it).
fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        if find_in_value(value, offset, path) || covers(&key.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Segment>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) if find_in_table(table, offset, path) => return true,
        DeValue::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                if find_in_value(element, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    covers(&value.span(), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_column(text, 12), (2, 6));
        assert_eq!(line_column(text, text.len()), (3, 1));
    }

    #[test]
    fn serde_type_errors_are_reworded_as_must_be_got() {
        assert_eq!(
            reword("invalid type: string \"2\", expected i64"),
            "must be an integer, got string \"2\""
        );
        assert_eq!(
            reword("invalid type: integer `-99999999999999999999` as i128, expected i64"),
            "is out of range, got integer `-99999999999999999999`"
        );
        assert_eq!(
            reword("invalid type: string \"x\", expected a sequence"),
            "must be an array, got string \"x\""
        );
    }

    #[test]
    fn syntax_errors_are_named_after_the_key_on_their_line() {
        let text = "[cluster]\nname = 1\n[[workers]]\nname = 2\n[[workers]]\ncount = 3\n[masters\n";
        let offset = |needle: &str| text.find(needle).unwrap();
        assert_eq!(
            field_on_line(text, offset("name = 1")).as_deref(),
            Some("cluster.name")
        );
        assert_eq!(
            field_on_line(text, offset("name = 2")).as_deref(),
            Some("workers[0].name")
        );
        assert_eq!(
            field_on_line(text, offset("count = 3") + 5).as_deref(),
            Some("workers[1].count")
        );
        assert_eq!(
            field_on_line(text, offset("[masters")).as_deref(),
            Some("masters")
        );
        assert_eq!(field_on_line("= 1", 0), None);
    }

    #[test]
    fn many_displays_one_problem_per_line() {
        let one = |line| SpecError::Invalid {
            path: "x.toml".into(),
            line,
            column: 3,
            field: "cluster.name".into(),
            message: "must not be empty".into(),
        };
        let many = SpecError::Many(vec![one(1), one(2)]);
        assert_eq!(
            many.to_string(),
            "x.toml:1:3: cluster.name must not be empty\nx.toml:2:3: cluster.name must not be empty"
        );
        assert_eq!(many.problems().len(), 2);
        assert_eq!(many.exit_code(), 2);
    }
}
