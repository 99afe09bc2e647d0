use super::*;

/// The keywords a definition may use: what OpenAPI 2 and 3.0 share, plus extensions.
const ALLOWED: &[&str] = &[
    "type", "format", "description", "properties", "required", "items", "additionalProperties", "enum", "default", "minimum", "maximum", "pattern",
    "minItems", "maxItems", "minLength", "maxLength",
];

fn check_keywords(path: &str, schema: &Value, bad: &mut Vec<String>) {
    let Value::Object(m) = schema else { return bad.push(format!("{path}: not an object")) };
    for (k, v) in m {
        if !(ALLOWED.contains(&k.as_str()) || k.starts_with("x-kubernetes-")) {
            bad.push(format!("{path}: {k}"));
        }
        match k.as_str() {
            "properties" => v.as_object().into_iter().flatten().for_each(|(name, sub)| check_keywords(&format!("{path}.{name}"), sub, bad)),
            "items" => check_keywords(&format!("{path}[]"), v, bad),
            "additionalProperties" if v.is_object() => check_keywords(&format!("{path}{{}}"), v, bad),
            _ => {}
        }
    }
    if let Some(t) = m.get("type") {
        assert!(t.is_string(), "{path}: type {t}");
    }
}

#[test]
fn every_definition_is_in_the_openapi_subset_and_carries_its_group_version_kind() {
    let doc = v2();
    let defs = doc["definitions"].as_object().unwrap();
    let mut bad = Vec::new();
    for (name, schema) in defs {
        check_keywords(name, schema, &mut bad);
    }
    assert!(bad.is_empty(), "keywords OpenAPI 2 does not have: {bad:?}");
    let deployment = &defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(deployment["x-kubernetes-group-version-kind"], json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));
    for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
        assert!(deployment["properties"].get(field).is_some(), "Deployment has {field}");
    }
    let containers = &deployment["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["items"]["required"], json!(["name"]));
    for name in ["io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Node", "io.k8s.api.core.v1.Service", "io.k8s.api.coordination.v1.Lease", "io.k8s.api.certificates.v1.CertificateSigningRequest", "io.clusterctl.v1.MachinePool"] {
        assert!(defs.contains_key(name), "{name} is defined");
    }
    // Int-or-string fields as Kubernetes publishes them.
    let port = &defs["io.k8s.api.core.v1.Service"]["properties"]["spec"]["properties"]["ports"]["items"]["properties"]["targetPort"];
    assert_eq!((port["type"].as_str(), port["format"].as_str()), (Some("string"), Some("int-or-string")));
}

#[test]
fn every_write_operation_lists_field_validation_in_v2_and_v3() {
    let patch = &v2()["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "apps", "version": "v1", "kind": "Deployment"}));
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    let index = v3_index();
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    assert!(index["paths"].get("api/v1").is_some());
    let (_, body) = serve("/openapi/v3/apis/apps/v1", "application/json").unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let ops = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    for method in ["put", "patch"] {
        assert!(ops[method]["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"), "{method}");
    }
    assert!(doc["components"]["schemas"].get("io.k8s.api.apps.v1.Deployment").is_some());
    assert!(doc["components"]["schemas"].get("io.k8s.api.core.v1.Pod").is_none(), "core kinds are in api/v1's document");
    assert!(serve("/openapi/v3/apis/nothing/v1", "").is_none());
}

/// Reads protobuf wire format: (field, wire type, payload) of each field of a message.
fn fields(mut b: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => varint(&mut b).to_le_bytes().to_vec(),
            1 => {
                let (x, rest) = b.split_at(8);
                b = rest;
                x.to_vec()
            }
            2 => {
                let n = varint(&mut b) as usize;
                let (x, rest) = b.split_at(n);
                b = rest;
                x.to_vec()
            }
            w => panic!("wire type {w}"),
        };
        out.push((field, wire, payload));
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn the_protobuf_form_is_gnostic_s_document_with_the_same_definitions() {
    let (content_type, body) = serve("/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json").unwrap();
    assert_eq!(content_type, V2_PROTOBUF);
    let doc = fields(&body);
    assert_eq!(doc.iter().find(|f| f.0 == 1).map(|f| text(&f.2)).as_deref(), Some("2.0"));
    let definitions = fields(&doc.iter().find(|f| f.0 == 9).expect("definitions").2);
    let named: Vec<(String, Vec<u8>)> = definitions
        .iter()
        .map(|(_, _, named)| {
            let f = fields(named);
            (text(&f[0].2), f[1].2.clone())
        })
        .collect();
    assert_eq!(named.len(), v2()["definitions"].as_object().unwrap().len());
    let (_, deployment) = named.iter().find(|(n, _)| n == "io.k8s.api.apps.v1.Deployment").expect("the Deployment");
    let schema = fields(deployment);
    // type (22) is TypeItem { value: "object" }; properties (25) name apiVersion..status.
    let type_item = fields(&schema.iter().find(|f| f.0 == 22).unwrap().2);
    assert_eq!(text(&type_item[0].2), "object");
    let properties: Vec<String> = fields(&schema.iter().find(|f| f.0 == 25).unwrap().2).iter().map(|(_, _, p)| text(&fields(p)[0].2)).collect();
    assert!(properties.contains(&"spec".to_string()) && properties.contains(&"apiVersion".to_string()), "{properties:?}");
    // The group-version-kind extension (31) as YAML text kubectl parses.
    let gvk = schema.iter().filter(|f| f.0 == 31).map(|f| fields(&f.2)).find(|f| text(&f[0].2) == "x-kubernetes-group-version-kind").expect("the GVK extension");
    let any = fields(&gvk[1].2);
    let yaml: Value = serde_json::from_str(&text(&any[0].2)).unwrap();
    assert_eq!(yaml, json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));
    // JSON unless protobuf is asked for.
    let (content_type, json_body) = serve("/openapi/v2", "application/json").unwrap();
    assert_eq!(content_type, "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&json_body).unwrap()["swagger"], "2.0");
}
