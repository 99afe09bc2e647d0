//! Service IPs: the API server gives every Service (but `ExternalName` and headless ones,
//! `clusterIP: None`) an address of the service CIDR when it is created, as Kubernetes' service
//! REST storage does, so that `kubectl create` answers with `spec.clusterIP` filled.
//!
//! Each address taken is a store key of its own (`/registry/clusterctl/serviceips/<ip>`, naming
//! the Service's namespace, name and uid), created before the Service, so that two API servers
//! of an HA control plane never hand out one address twice (the store's create is the lock, as
//! Kubernetes' `IPAddress` objects are). An address whose Service is gone (deleted, or its
//! creation failed after the address was taken) is taken over by the next Service that wants it:
//! nothing has to release addresses for them to be reused, and a crash cannot leak one for good.
//!
//! The first address of the range is kept for `default/kubernetes` (the API itself); a random free
//! address is picked for the others; a requested address must be in the range and free. An update
//! that leaves `clusterIP` out keeps the allocated one (Kubernetes' `patchAllocatedValues`); one
//! that changes it is refused (immutable).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::error::ApiError;
use super::store::{Store, StoreError};
use crate::api::resource::SERVICES;
use crate::api::schema::{FieldError, FieldErrorKind};

const PREFIX: &str = "/registry/clusterctl/serviceips/";
/// Random picks before the range is called full.
const ATTEMPTS: usize = 64;

/// The Service that `default/kubernetes` names: the API itself.
pub const API_SERVICE: (&str, &str) = ("default", "kubernetes");

/// The address kept for `default/kubernetes`: the first of the range.
pub fn api_address(range: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(range.network()) + 1)
}

/// Whether a Service of this spec gets a cluster IP (not `ExternalName`, not headless).
fn wants_address(spec: &Value) -> bool {
    spec.get("type").and_then(Value::as_str) != Some("ExternalName") && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
}

fn invalid(field: &str, message: String) -> FieldError {
    FieldError { kind: FieldErrorKind::Invalid, field: field.into(), message }
}

/// Gives a new Service (`object`, already validated) its cluster IP: the requested one, checked
/// and taken, or a free one; fills `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` as Kubernetes
/// does. `dry_run` checks without taking. Errors are 422 with the field, or the store's.
pub async fn allocate(store: &dyn Store, range: Option<Ipv4Net>, namespace: &str, name: &str, object: &mut Value, dry_run: bool) -> Result<(), ApiError> {
    let spec = object.get("spec").cloned().unwrap_or_default();
    let requested = spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(ips) = spec.get("clusterIPs").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        let first = ips[0].as_str().unwrap_or("");
        if requested.as_deref().is_some_and(|r| r != first) {
            let message = format!("Invalid value: {ips:?}: must be consistent with spec.clusterIP");
            return Err(ApiError::invalid_fields(&SERVICES, name, &[invalid("spec.clusterIPs", message)]));
        }
    }
    let owner = json!({"namespace": namespace, "name": name, "uid": object.pointer("/metadata/uid").cloned().unwrap_or_default()});
    let Some(spec_mut) = object.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if !wants_address(&spec) {
        if requested.as_deref() == Some("None") {
            spec_mut.insert("clusterIPs".into(), json!(["None"]));
        }
        return Ok(());
    }
    let Some(range) = range else { return Ok(()) };
    let api = (namespace, name) == API_SERVICE;
    let ip = match requested {
        Some(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                let e = invalid("spec.clusterIPs[0]", format!("Invalid value: {text:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
                ApiError::invalid_fields(&SERVICES, name, &[e])
            })?;
            let usable = range.contains(&ip) && ip != range.network() && ip != range.broadcast();
            if !usable {
                let e = invalid("spec.clusterIPs", format!("Invalid value: [{text:?}]: failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {range}"));
                return Err(ApiError::invalid_fields(&SERVICES, name, &[e]));
            }
            if ip == api_address(range) && !api {
                let e = invalid("spec.clusterIPs", format!("Invalid value: [{text:?}]: failed to allocate IP {text}: provided IP is already allocated"));
                return Err(ApiError::invalid_fields(&SERVICES, name, &[e]));
            }
            if !take(store, ip, &owner, dry_run).await? {
                let e = invalid("spec.clusterIPs", format!("Invalid value: [{text:?}]: failed to allocate IP {text}: provided IP is already allocated"));
                return Err(ApiError::invalid_fields(&SERVICES, name, &[e]));
            }
            ip
        }
        None if api => {
            let ip = api_address(range);
            take(store, ip, &owner, dry_run).await?;
            ip
        }
        None => {
            let mut found = None;
            for _ in 0..ATTEMPTS {
                let ip = random_in(range);
                if ip == api_address(range) {
                    continue;
                }
                if take(store, ip, &owner, dry_run).await? {
                    found = Some(ip);
                    break;
                }
            }
            found.ok_or_else(|| ApiError::internal(format!("failed to allocate a service IP: the range {range} is full")))?
        }
    };
    spec_mut.insert("clusterIP".into(), json!(ip.to_string()));
    spec_mut.insert("clusterIPs".into(), json!([ip.to_string()]));
    spec_mut.entry("ipFamilies").or_insert(json!(["IPv4"]));
    spec_mut.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    Ok(())
}

/// A usable address of `range` (not its network or broadcast address), at random.
fn random_in(range: Ipv4Net) -> Ipv4Addr {
    let size = 1u64 << (32 - range.prefix_len());
    let offset = 1 + rand::random::<u64>() % (size - 2).max(1);
    Ipv4Addr::from(u32::from(range.network()).wrapping_add(offset as u32))
}

/// Takes `ip` for `owner`: true when it was free, or held for a Service that no longer holds it.
async fn take(store: &dyn Store, ip: Ipv4Addr, owner: &Value, dry_run: bool) -> Result<bool, ApiError> {
    let key = format!("{PREFIX}{ip}");
    let backend = |e: StoreError| ApiError::internal(format!("allocating service IP {ip}: {e}"));
    let Some(held) = store.get(&key).await.map_err(backend)? else {
        if dry_run {
            return Ok(true);
        }
        return match store.create(&key, owner.clone()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        };
    };
    if still_held(store, ip, &held.value).await.map_err(backend)? {
        return Ok(false);
    }
    if dry_run {
        return Ok(true);
    }
    match store.update(&key, owner.clone(), Some(held.mod_rev)).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

/// Whether the Service an address record names still exists with that uid and that address.
async fn still_held(store: &dyn Store, ip: Ipv4Addr, record: &Value) -> Result<bool, StoreError> {
    let field = |f: &str| record.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let (namespace, name, uid) = (field("namespace"), field("name"), field("uid"));
    let Some(service) = store.get(&SERVICES.store_key(Some(&namespace), &name)).await? else { return Ok(false) };
    let same_uid = service.value.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str());
    let same_ip = service.value.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(ip.to_string().as_str());
    Ok(same_uid && same_ip)
}

/// An update or patch result that leaves out the allocated address keeps it.
pub fn keep_allocated(stored: &Value, next: &mut Value) {
    let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let unset = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v == "" || v.as_array().is_some_and(Vec::is_empty));
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return;
    }
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if unset(spec.get(field))
            && let Some(v) = stored.pointer(&format!("/spec/{field}")).filter(|v| !unset(Some(v)))
        {
            spec.insert(field.into(), v.clone());
        }
    }
}

/// A change of an allocated `clusterIP`, refused as Kubernetes refuses it.
pub fn immutable_changes(stored: &Value, next: &Value) -> Vec<FieldError> {
    let before = stored.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty());
    let after = next.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
    let external = next.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
    match before {
        Some(b) if b != after && !external => vec![invalid("spec.clusterIPs[0]", format!("Invalid value: {after:?}: may not change once set"))],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::sqlite::SqliteStore;

    fn service(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}, "spec": spec})
    }

    async fn create(store: &SqliteStore, range: Ipv4Net, mut svc: Value) -> Result<Value, ApiError> {
        let name = svc["metadata"]["name"].as_str().unwrap().to_string();
        allocate(store, Some(range), "default", &name, &mut svc, false).await?;
        store.create(&SERVICES.store_key(Some("default"), &name), svc.clone()).await.unwrap();
        Ok(svc)
    }

    #[tokio::test]
    async fn services_get_distinct_addresses_of_the_range_and_the_api_the_first() {
        let store = SqliteStore::in_memory().unwrap();
        let range: Ipv4Net = "10.96.0.0/24".parse().unwrap();
        let api = create(&store, range, service("kubernetes", json!({"ports": [{"port": 443}]}))).await.unwrap();
        assert_eq!(api["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(api["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(api["spec"]["ipFamilies"], json!(["IPv4"]));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..100 {
            let svc = create(&store, range, service(&format!("s{i}"), json!({"ports": [{"port": 80}]}))).await.unwrap();
            let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(range.contains(&ip) && ip != range.network() && ip != range.broadcast() && ip != api_address(range), "{ip}");
            assert!(seen.insert(ip), "{ip} twice");
        }
    }

    #[tokio::test]
    async fn a_requested_address_is_checked_and_taken_once_and_freed_with_its_service() {
        let store = SqliteStore::in_memory().unwrap();
        let range: Ipv4Net = "10.96.0.0/16".parse().unwrap();
        let dns = create(&store, range, service("dns", json!({"clusterIP": "10.96.0.10"}))).await.unwrap();
        assert_eq!(dns["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let taken = create(&store, range, service("other", json!({"clusterIP": "10.96.0.10"}))).await.unwrap_err();
        assert_eq!(taken.0.code, 422);
        assert!(taken.0.message.contains("provided IP is already allocated"), "{taken:?}");
        for (bad, says) in [("10.97.0.1", "not in the valid range"), ("nonsense", "must be a valid IP"), ("10.96.0.1", "already allocated")] {
            let e = create(&store, range, service("bad", json!({"clusterIP": bad}))).await.unwrap_err();
            assert!(e.0.message.contains(says), "{bad}: {e:?}");
        }
        // the Service goes: its address is free for the next one
        store.delete(&SERVICES.store_key(Some("default"), "dns"), None).await.unwrap();
        let again = create(&store, range, service("dns2", json!({"clusterIP": "10.96.0.10"}))).await.unwrap();
        assert_eq!(again["spec"]["clusterIP"], "10.96.0.10");
    }

    #[tokio::test]
    async fn headless_and_external_name_services_get_no_address() {
        let store = SqliteStore::in_memory().unwrap();
        let range: Ipv4Net = "10.96.0.0/16".parse().unwrap();
        let headless = create(&store, range, service("h", json!({"clusterIP": "None"}))).await.unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let external = create(&store, range, service("e", json!({"type": "ExternalName", "externalName": "example.com"}))).await.unwrap();
        assert!(external["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn an_update_without_the_address_keeps_it_and_one_that_changes_it_is_refused() {
        let stored = json!({"spec": {"clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"], "ports": [{"port": 80}]}});
        let mut next = json!({"spec": {"ports": [{"port": 81}]}});
        keep_allocated(&stored, &mut next);
        assert_eq!(next["spec"]["clusterIP"], "10.96.3.4");
        assert!(immutable_changes(&stored, &next).is_empty());
        let changed = json!({"spec": {"clusterIP": "10.96.3.5"}});
        assert_eq!(immutable_changes(&stored, &changed)[0].field, "spec.clusterIPs[0]");
    }
}
