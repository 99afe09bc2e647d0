//! Changing a spec file in place. The file is read with a TOML editor (`toml_edit`), which knows
//! where every value sits in the text; the new value replaces exactly those bytes, so every
//! comment, blank line, quote style, header spacing and table form stays as the user wrote it
//! (re-rendering the document would not: `toml_edit` writes every `[[workers]]` header of a file
//! with the spacing of the first).

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Document, Item, Value};

use super::{ClusterSpec, SpecError};

/// Why a spec could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum SpecEditError {
    /// The text is not TOML at all.
    #[error("{}: reading the spec as TOML", path.display())]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// What the TOML parser said.
        #[source]
        source: toml_edit::TomlError,
    },
    /// No worker pool has the name asked for.
    #[error("{}: no worker pool named {pool:?} (its worker pools: {})", path.display(), known.join(", "))]
    NoPool {
        /// The spec file.
        path: PathBuf,
        /// The name asked for.
        pool: String,
        /// The names of the pools the file has, in order.
        known: Vec<String>,
    },
    /// The pool has no `count` to change (a spec that validates always has one).
    #[error("{}: worker pool {pool:?} has no count", path.display())]
    NoCount {
        /// The spec file.
        path: PathBuf,
        /// The pool.
        pool: String,
    },
    /// The edited spec would not validate (the count is out of range, or the file was not valid to start with).
    #[error("{}: the spec with pool {pool}'s count set to {count} would not be valid", path.display())]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// The pool being changed.
        pool: String,
        /// The count being set.
        count: u32,
        /// The validation problems (boxed: they are large, and rare).
        #[source]
        source: Box<SpecError>,
    },
}

/// The spec `text` (read from `path`) with worker pool `pool`'s `count` set to `count` and
/// not one other byte changed; the result is validated before it is returned.
///
/// Pools may be written as `[[workers]]` tables (headers with spaces, comments after them, names
/// in either quote style) or as inline tables in `workers = [{ ... }, ...]`.
pub fn set_pool_count(path: &Path, text: &str, pool: &str, count: u32) -> Result<String, SpecEditError> {
    let doc = Document::parse(text).map_err(|source| SpecEditError::Parse { path: path.to_path_buf(), source })?;
    // Each pool as (name, where its count is written, if it is).
    let pools: Vec<(&str, Option<Range<usize>>)> = match doc.get("workers") {
        Some(Item::ArrayOfTables(tables)) => tables.iter().map(|t| (t.get("name").and_then(Item::as_str).unwrap_or_default(), t.get("count").and_then(Item::span))).collect(),
        Some(Item::Value(Value::Array(values))) => values
            .iter()
            .filter_map(Value::as_inline_table)
            .map(|t| (t.get("name").and_then(Value::as_str).unwrap_or_default(), t.get("count").and_then(Value::span)))
            .collect(),
        _ => Vec::new(),
    };
    let span = match pools.iter().find(|(name, _)| *name == pool) {
        Some((_, Some(span))) => span.clone(),
        Some((_, None)) => return Err(SpecEditError::NoCount { path: path.to_path_buf(), pool: pool.to_string() }),
        None => return Err(SpecEditError::NoPool { path: path.to_path_buf(), pool: pool.to_string(), known: pools.iter().map(|(name, _)| name.to_string()).collect() }),
    };
    let next = format!("{}{count}{}", &text[..span.start], &text[span.end..]);
    ClusterSpec::parse(path, &next).map_err(|source| SpecEditError::Invalid { path: path.to_path_buf(), pool: pool.to_string(), count, source: Box::new(source) })?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"[cluster]
name = "t1"
region = "us-east-1"
availability_zones = ["us-east-1a"]

[network]
vpc_cidr = "10.42.0.0/16"
admin_cidrs = ["10.42.0.1/32"]

[masters]
count = 1
instance_type = "t3.medium"
image = { name = "debian-12-*" }
"#;

    const TABLES: &str = r#"
[[workers]]
name = "default"
count = 2   # the web tier
instance_type = "t3.small"
image = { name = "debian-12-*" }

[[workers]]
count = 1
instance_type = "t3.large"
name = "big"
image = { name = "debian-12-*" }
"#;

    fn path() -> &'static Path {
        Path::new("t.toml")
    }

    fn counts(text: &str) -> Vec<(String, u32)> {
        let spec = ClusterSpec::parse(path(), text).unwrap();
        spec.pools().map(|p| (p.name.as_str().to_string(), p.count)).collect()
    }

    #[test]
    fn only_the_named_pools_count_changes_and_its_comment_stays() {
        let spec = format!("{HEAD}{TABLES}");
        let next = set_pool_count(path(), &spec, "default", 5).unwrap();
        assert_eq!(next, spec.replacen("count = 2   # the web tier", "count = 5   # the web tier", 1));
        assert_eq!(counts(&next), [("masters".to_string(), 1), ("default".into(), 5), ("big".into(), 1)]);
    }

    #[test]
    fn a_count_written_before_the_name_is_found() {
        let spec = format!("{HEAD}{TABLES}");
        let next = set_pool_count(path(), &spec, "big", 3).unwrap();
        assert_eq!(next, spec.replacen("count = 1\ninstance_type = \"t3.large\"", "count = 3\ninstance_type = \"t3.large\"", 1));
    }

    #[test]
    fn spaced_headers_single_quoted_names_and_comments_after_headers_are_kept() {
        let pools = r#"
[[ workers ]]   # the web tier
# sized for the launch
name = 'web'
count = 2
instance_type = 't3.small'
image = { name = 'debian-12-*' }   # the same image everywhere

[[workers]] # batch jobs
name = "batch"
count = 4
instance_type = "t3.large"
image = { name = "debian-12-*" }
"#;
        let spec = format!("{HEAD}{pools}");
        let next = set_pool_count(path(), &spec, "web", 7).unwrap();
        assert_eq!(next, spec.replacen("name = 'web'\ncount = 2", "name = 'web'\ncount = 7", 1));
        assert_eq!(counts(&next)[1..], [("web".to_string(), 7), ("batch".into(), 4)]);
    }

    #[test]
    fn a_pool_in_an_array_of_inline_tables_is_edited_in_place() {
        let pools = r#"
# every pool on one line each
workers = [
  { name = "default", count = 2, instance_type = "t3.small", image = { name = "debian-12-*" } },  # web
  { name = 'big', count = 1 , instance_type = "t3.large", image = { name = "debian-12-*" } },
]
"#;
        // A key after a table header would belong to that table: the pools come first.
        let spec = format!("{pools}\n{HEAD}");
        let next = set_pool_count(path(), &spec, "big", 0).unwrap();
        assert_eq!(next, spec.replacen("count = 1 ,", "count = 0 ,", 1));
        let next = set_pool_count(path(), &next, "default", 12).unwrap();
        assert_eq!(counts(&next)[1..], [("default".to_string(), 12), ("big".into(), 0)]);
        assert_eq!(next, spec.replacen("count = 1 ,", "count = 0 ,", 1).replacen("count = 2,", "count = 12,", 1));
        assert!(next.contains("count = 12, instance_type = \"t3.small\"") && next.contains("},  # web"), "{next}");
    }

    #[test]
    fn a_pool_that_is_not_there_is_an_error_naming_it_and_the_pools_there_are() {
        let spec = format!("{HEAD}{TABLES}");
        let err = set_pool_count(path(), &spec, "gpu", 3).unwrap_err();
        assert!(matches!(&err, SpecEditError::NoPool { pool, known, .. } if pool == "gpu" && known == &["default", "big"]), "{err:?}");
        assert_eq!(err.to_string(), "t.toml: no worker pool named \"gpu\" (its worker pools: default, big)");
        // The master pool is not a worker pool.
        assert!(matches!(set_pool_count(path(), &spec, "masters", 3), Err(SpecEditError::NoPool { .. })));
    }

    #[test]
    fn a_count_the_spec_does_not_allow_is_refused_with_the_validation_problem() {
        let spec = format!("{HEAD}{TABLES}");
        let err = set_pool_count(path(), &spec, "default", 1000).unwrap_err();
        let SpecEditError::Invalid { source, .. } = &err else { panic!("{err:?}") };
        assert!(source.to_string().contains("workers[0].count"), "{source}");
    }

    #[test]
    fn a_pool_without_a_count_is_an_error_naming_it() {
        let spec = format!("{HEAD}{TABLES}").replacen("count = 1\ninstance_type = \"t3.large\"", "instance_type = \"t3.large\"", 1);
        let err = set_pool_count(path(), &spec, "big", 3).unwrap_err();
        assert_eq!(err.to_string(), "t.toml: worker pool \"big\" has no count");
    }

    #[test]
    fn text_that_is_not_toml_is_a_parse_error() {
        assert!(matches!(set_pool_count(path(), "[[workers]\nname =", "default", 1), Err(SpecEditError::Parse { .. })));
    }
}
