use serde_json::json;

use super::*;
use crate::api::resource::{DEPLOYMENTS, NODES, PODS};
use crate::api::schema::schema_for;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "a", "operator": "Exists"}]
            }}
        }
    })
}

fn smp(original: &Value, patch: Value) -> Value {
    apply(PatchType::Strategic, original, &patch, schema_for(&DEPLOYMENTS)).unwrap()
}

fn containers(d: &Value) -> &Vec<Value> {
    d["spec"]["template"]["spec"]["containers"].as_array().unwrap()
}

#[test]
fn containers_merge_by_name_and_keep_the_ones_the_patch_does_not_name() {
    let out = smp(&deployment(), json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}));
    let c = containers(&out);
    assert_eq!(c.len(), 2, "the sidecar stays: {c:?}");
    assert_eq!(c[0]["image"], "app:2");
    assert_eq!(c[0]["env"].as_array().unwrap().len(), 2, "the rest of the container stays");
    assert_eq!(c[1]["name"], "sidecar");
    // A merge patch of the same replaces the list.
    let merged = apply(PatchType::Merge, &deployment(), &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}), None).unwrap();
    assert_eq!(containers(&merged).len(), 1);
}

#[test]
fn env_merges_by_name_ports_by_container_port_and_patch_delete_removes_an_element() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app",
            "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}],
            "ports": [{"containerPort": 9090, "$patch": "delete"}, {"containerPort": 7070, "name": "admin"}]}]}}}}),
    );
    let app = &containers(&out)[0];
    assert_eq!(app["env"], json!([{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]));
    assert_eq!(app["ports"], json!([{"containerPort": 8080, "name": "http"}, {"containerPort": 7070, "name": "admin"}]));
}

#[test]
fn set_element_order_orders_the_merged_list_as_kubectl_sent_it() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "app:3"}]
        }}}}),
    );
    let names: Vec<&str> = containers(&out).iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sidecar", "app"]);
    assert_eq!(containers(&out)[1]["image"], "app:3");
}

#[test]
fn patch_replace_replaces_a_list_or_a_map_and_null_deletes_a_field() {
    let out = smp(&deployment(), json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}}));
    assert_eq!(containers(&out), &vec![json!({"name": "only", "image": "o:1"})]);
    let out = smp(&deployment(), json!({"metadata": {"labels": {"$patch": "replace", "app": "web2"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web2"}));
    let out = smp(&deployment(), json!({"metadata": {"labels": {"tier": null, "new": "x"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    let out = smp(&deployment(), json!({"spec": {"strategy": {"$patch": "delete"}}}));
    assert!(out["spec"].get("strategy").is_none());
}

#[test]
fn retain_keys_drops_the_fields_it_does_not_list() {
    // `kubectl apply` switching a Deployment to Recreate sends exactly this.
    let out = smp(&deployment(), json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}));
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let refused = apply(PatchType::Strategic, &deployment(), &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}), schema_for(&DEPLOYMENTS));
    assert!(matches!(refused, Err(PatchError::Unprocessable(_))), "{refused:?}");
}

#[test]
fn atomic_lists_and_fields_the_schema_does_not_describe_are_replaced() {
    let out = smp(&deployment(), json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}}));
    assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
    let mut with_unknown = deployment();
    with_unknown["spec"]["future"] = json!({"items": [1, 2], "keep": true});
    let out = smp(&with_unknown, json!({"spec": {"future": {"items": [3]}}}));
    assert_eq!(out["spec"]["future"], json!({"items": [3], "keep": true}));
}

#[test]
fn pod_and_node_conditions_merge_by_type() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    let out = apply(PatchType::Strategic, &pod, &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}), schema_for(&PODS)).unwrap();
    assert_eq!(out["status"]["conditions"], json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]));
    let node = json!({"metadata": {"name": "n"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let out = apply(PatchType::Strategic, &node, &json!({"status": {"addresses": [{"type": "Hostname", "address": "n"}]}}), schema_for(&NODES)).unwrap();
    assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
}

#[test]
fn primitive_lists_with_the_merge_strategy_are_sets_and_delete_from_primitive_list_removes() {
    let schema = json!({"type": "object", "properties": {"finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"}}});
    let original = json!({"finalizers": ["a", "b"]});
    let out = apply(PatchType::Strategic, &original, &json!({"finalizers": ["b", "c"]}), Some(&schema)).unwrap();
    assert_eq!(out["finalizers"], json!(["a", "b", "c"]));
    let out = apply(PatchType::Strategic, &original, &json!({"$deleteFromPrimitiveList/finalizers": ["a"]}), Some(&schema)).unwrap();
    assert_eq!(out["finalizers"], json!(["b"]));
}

#[test]
fn a_malformed_strategic_patch_is_refused() {
    let keyless = apply(PatchType::Strategic, &deployment(), &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}), schema_for(&DEPLOYMENTS));
    assert!(matches!(keyless, Err(PatchError::Unprocessable(_))), "{keyless:?}");
    assert!(matches!(apply(PatchType::Strategic, &deployment(), &json!([1]), None), Err(PatchError::BadRequest(_))));
    assert!(matches!(apply(PatchType::Strategic, &deployment(), &json!({"$patch": "explode"}), None), Err(PatchError::Unprocessable(_))));
}

#[test]
fn json_patch_operations_follow_rfc_6902() {
    let doc = json!({"a": {"b": [1, 2, 3]}, "x/y": 1, "t~": 2});
    let out = apply(
        PatchType::Json,
        &doc,
        &json!([
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "replace", "path": "/x~1y", "value": 10},
            {"op": "copy", "from": "/t~0", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/a/d"},
            {"op": "test", "path": "/a/d", "value": 2}
        ]),
        None,
    )
    .unwrap();
    assert_eq!(out, json!({"a": {"b": [9, 2, 3, 4], "d": 2}, "x/y": 10, "t~": 2}));
}

#[test]
fn a_json_patch_that_does_not_apply_is_unprocessable_and_a_malformed_one_a_bad_request() {
    let doc = json!({"metadata": {"resourceVersion": "5"}, "a": [1]});
    for ops in [
        json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]),
        json!([{"op": "remove", "path": "/nope"}]),
        json!([{"op": "replace", "path": "/a/1", "value": 2}]),
        json!([{"op": "add", "path": "/a/5", "value": 2}]),
        json!([{"op": "add", "path": "/missing/child", "value": 2}]),
        json!([{"op": "move", "from": "/a", "path": "/a/0"}]),
    ] {
        let r = apply(PatchType::Json, &doc, &ops, None);
        assert!(matches!(r, Err(PatchError::Unprocessable(_))), "{ops}: {r:?}");
    }
    for ops in [json!({"op": "add"}), json!([{"path": "/a"}]), json!([{"op": "jump", "path": "/a"}]), json!([{"op": "add", "path": "/b"}])] {
        let r = apply(PatchType::Json, &doc, &ops, None);
        assert!(matches!(r, Err(PatchError::BadRequest(_))), "{ops}: {r:?}");
    }
}

#[test]
fn content_types_name_the_formats() {
    assert_eq!(PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"), Some(PatchType::Strategic));
    assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
    assert_eq!(PatchType::from_content_type("application/merge-patch+json"), Some(PatchType::Merge));
    assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), None);
}
