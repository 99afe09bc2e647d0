//! `meta.k8s.io/v1` `Table` responses: kubectl asks for them (`Accept:
//! application/json;as=Table;v=v1;g=meta.k8s.io, ...`) and prints `get` with the server's columns,
//! which are those of `clusterctl get` ([`crate::api::columns`]). Rows carry the object's metadata
//! (`PartialObjectMetadata`), from which kubectl takes the NAMESPACE column of `-A`.

use serde_json::{Value, json};

use crate::api::columns;
use crate::api::resource::ResourceType;

/// The Table of `items` (objects of `rt`).
pub fn table(rt: &ResourceType, items: &[Value], resource_version: &str) -> Value {
    let definitions: Vec<Value> = columns::header(rt)
        .iter()
        .enumerate()
        .map(|(i, name)| json!({ "name": name, "type": "string", "format": if i == 0 { "name" } else { "" }, "description": "", "priority": 0 }))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "cells": columns::row(rt, item),
                "object": { "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})) },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::{NODES, PODS};

    #[test]
    fn a_table_has_the_get_columns_and_a_row_per_object_with_its_metadata() {
        let node = json!({"metadata": {"name": "w1", "uid": "u"}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.70.0.5"}]}});
        let t = table(&NODES, &[node], "42");
        assert_eq!((t["kind"].as_str(), t["apiVersion"].as_str(), t["metadata"]["resourceVersion"].as_str()), (Some("Table"), Some("meta.k8s.io/v1"), Some("42")));
        let names: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["NAME", "ROLE", "STATUS", "INTERNAL-IP", "INSTANCE", "AGE"]);
        assert_eq!(t["rows"][0]["cells"].as_array().unwrap()[..4], [json!("w1"), json!("worker"), json!("Ready,SchedulingDisabled"), json!("10.70.0.5")]);
        assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table(&PODS, &[], "1")["rows"], json!([]));
    }
}
