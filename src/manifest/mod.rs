//! Manifests: multi-document YAML in Kubernetes' shapes, validated into typed objects.
//!
//! [`load`] reads a file, [`parse`] a text. Every document is checked field by field before it is
//! typed, so that an error names the file, the document (its 1-based index, and kind/name when
//! known), the field path (`spec.template.spec.containers[0].image`) and what is wrong. All
//! documents are checked, and all errors returned, before the caller applies anything.
//! Unknown fields are tolerated; supported kinds: Namespace, ConfigMap, Pod, Deployment, Service.

pub mod apply;
mod validate;

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::api::resource::{self, ResourceType};
use crate::api::{ConfigMap, ObjectMeta};
use crate::api::deployment::Deployment;
use crate::api::pod::Pod;
use crate::api::service::Service;

/// A Namespace (v1): only its metadata matters here.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// One typed object of a manifest.
// Unboxed: a manifest holds a handful of objects, and boxing would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Pod(Pod),
    Deployment(Deployment),
    Service(Service),
}

impl Object {
    /// The resource the object is of.
    pub fn resource(&self) -> &'static ResourceType {
        match self {
            Object::Namespace(_) => &resource::NAMESPACES,
            Object::ConfigMap(_) => &resource::CONFIG_MAPS,
            Object::Pod(_) => &resource::PODS,
            Object::Deployment(_) => &resource::DEPLOYMENTS,
            Object::Service(_) => &resource::SERVICES,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
        }
    }

    /// The object as JSON, with `apiVersion` and `kind` filled in.
    pub fn to_value(&self) -> Value {
        let mut v = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Pod(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
        }
        .unwrap_or(Value::Null);
        let rt = self.resource();
        if let Some(map) = v.as_object_mut() {
            map.insert("apiVersion".into(), Value::String(rt.api_version()));
            map.insert("kind".into(), Value::String(rt.kind.into()));
        }
        v
    }

    /// `deployment.apps/web`, as kubectl names objects in its output.
    pub fn display_name(&self) -> String {
        let rt = self.resource();
        let kind = rt.kind.to_lowercase();
        if rt.group.is_empty() { format!("{kind}/{}", self.metadata().name) } else { format!("{kind}.{}/{}", rt.group, self.metadata().name) }
    }
}

/// One document of a manifest, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based position in the file.
    pub index: usize,
    pub object: Object,
}

/// What is wrong with one field of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    /// 1-based document index.
    pub document: usize,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Dotted path with indices, e.g. `spec.template.spec.containers[0].image`; empty for the
    /// document as a whole.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            _ => {}
        }
        if self.field.is_empty() { write!(f, ": {}", self.problem) } else { write!(f, ": {}: {}", self.field, self.problem) }
    }
}

/// Every problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<Vec<Document>, ManifestErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ManifestErrors(vec![ManifestError { file: file.clone(), document: 0, kind: None, name: None, field: String::new(), problem: format!("cannot be read: {e}") }])
    })?;
    parse(&file, &text)
}

/// Validates every document of a manifest text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, ManifestErrors> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    let error = |document: usize, problem: String| ManifestError { file: file.into(), document, kind: None, name: None, field: String::new(), problem };
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let yaml = match serde_yaml_ng::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                errors.push(error(index, format!("is not valid YAML: {e}")));
                // The parser cannot resume after a syntax error.
                break;
            }
        };
        if yaml.is_null() {
            continue;
        }
        let value: Value = match serde_json::to_value(&yaml) {
            Ok(v) => v,
            Err(e) => {
                errors.push(error(index, format!("cannot be read as JSON-shaped data: {e}")));
                continue;
            }
        };
        match validate::document(&value) {
            Ok(object) => docs.push(Document { index, object }),
            Err((kind, name, problems)) => errors.extend(problems.into_iter().map(|(field, problem)| ManifestError {
                file: file.into(),
                document: index,
                kind: kind.clone(),
                name: name.clone(),
                field,
                problem,
            })),
        }
    }
    // The same object twice would be applied twice.
    for (i, d) in docs.iter().enumerate() {
        let key = |d: &Document| (d.object.resource().kind, d.object.metadata().namespace.clone(), d.object.metadata().name.clone());
        if let Some(first) = docs[..i].iter().find(|e| key(e) == key(d)) {
            errors.push(ManifestError {
                file: file.into(),
                document: d.index,
                kind: Some(d.object.resource().kind.into()),
                name: Some(d.object.metadata().name.clone()),
                field: "metadata.name".into(),
                problem: format!("duplicates document {}", first.index),
            });
        }
    }
    if docs.is_empty() && errors.is_empty() {
        errors.push(error(0, "holds no objects".into()));
    }
    if errors.is_empty() { Ok(docs) } else { Err(ManifestErrors(errors)) }
}

#[cfg(test)]
mod tests;
