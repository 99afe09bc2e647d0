//! `labelSelector` and `fieldSelector` in their equality forms: `k=v`, `k==v`, `k!=v`, joined by
//! commas; label selectors also take a bare `k` (has the label) and `!k` (does not). Field selectors
//! name any dotted path into the object (`spec.nodeName`, `metadata.name`, `status.phase`); a missing
//! field reads as the empty string.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals(String),
    NotEquals(String),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// The selectors of a list or watch request; an empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

fn parse(text: &str, allow_existence: bool) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, op) = if let Some((k, v)) = term.split_once("!=") {
            (k, Op::NotEquals(v.trim().into()))
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Op::Equals(v.trim().into()))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Op::Equals(v.trim().into()))
        } else if !allow_existence {
            return Err(format!("{term:?} is not of the form key=value or key!=value"));
        } else if let Some(k) = term.strip_prefix('!') {
            (k, Op::NotExists)
        } else {
            (term, Op::Exists)
        };
        let key = key.trim();
        let valid = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !valid {
            return Err(format!("{key:?} in {term:?} is not a valid key"));
        }
        out.push(Requirement { key: key.into(), op });
    }
    Ok(out)
}

fn field(object: &Value, path: &str) -> String {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Selectors {
    /// Parses the two query parameters; the error says which term is wrong.
    pub fn parse(label_selector: Option<&str>, field_selector: Option<&str>) -> Result<Self, String> {
        Ok(Selectors {
            labels: parse(label_selector.unwrap_or(""), true).map_err(|e| format!("invalid labelSelector: {e}"))?,
            fields: parse(field_selector.unwrap_or(""), false).map_err(|e| format!("invalid fieldSelector: {e}"))?,
        })
    }

    /// Whether the selectors select nothing out.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// The value a field selector requires `key` to equal, if it does (`spec.nodeName=w1`).
    pub fn field_equals(&self, key: &str) -> Option<&str> {
        self.fields.iter().find_map(|r| match &r.op {
            Op::Equals(v) if r.key == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match &r.op {
            Op::Equals(v) => label(&r.key) == Some(v.as_str()),
            Op::NotEquals(v) => label(&r.key) != Some(v.as_str()),
            Op::Exists => label(&r.key).is_some(),
            Op::NotExists => label(&r.key).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|r| match &r.op {
                Op::Equals(v) => field(object, &r.key) == *v,
                Op::NotEquals(v) => field(object, &r.key) != *v,
                Op::Exists | Op::NotExists => true,
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: &str, app: &str) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": app, "tier": "web"}}, "spec": {"nodeName": node}})
    }

    #[test]
    fn label_equality_and_existence() {
        let s = Selectors::parse(Some("app=web,tier==web"), None).unwrap();
        assert!(s.matches(&pod("w1", "web")));
        assert!(!s.matches(&pod("w1", "db")));
        let s = Selectors::parse(Some("app!=db,tier,!missing"), None).unwrap();
        assert!(s.matches(&pod("w1", "web")));
        assert!(!s.matches(&pod("w1", "db")));
    }

    #[test]
    fn field_equality_on_dotted_paths() {
        let s = Selectors::parse(None, Some("spec.nodeName=w1")).unwrap();
        assert!(s.matches(&pod("w1", "web")));
        assert!(!s.matches(&pod("w2", "web")));
        let unbound = Selectors::parse(None, Some("spec.nodeName=")).unwrap();
        assert!(unbound.matches(&json!({"spec": {}})));
        assert!(Selectors::parse(None, Some("spec.nodeName")).is_err());
        assert!(Selectors::parse(Some("a b=c"), None).is_err());
    }
}
