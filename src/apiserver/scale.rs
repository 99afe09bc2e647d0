//! The `scale` subresource of deployments, as `kubectl scale` uses it: an `autoscaling/v1` `Scale`
//! view (`spec.replicas`, `status.replicas`, `status.selector`) of the Deployment, read with GET and
//! written with PUT or a patch (merge, strategic merge or JSON); a write changes only the Deployment's `spec.replicas`.

use axum::Json;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{Identity, Verb};
use super::error::ApiError;
use super::handlers::{authorize, patch_error, write_back};
use super::patch::{self, PatchType};
use super::objects::{self, with_revision};
use super::target::Target;
use super::AppState;

/// The `Scale` view of a stored Deployment (with its `resourceVersion`).
pub fn scale_of(deployment: &Value) -> Value {
    let meta = &deployment["metadata"];
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": { "replicas": deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) },
        "status": {
            "replicas": deployment.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// The replica count a written `Scale` asks for.
fn wanted_replicas(scale: &Value) -> Result<i64, ApiError> {
    match scale.pointer("/spec/replicas").and_then(Value::as_i64) {
        Some(n) if n >= 0 => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("spec.replicas: {n} must be greater than or equal to 0"))),
        None => Err(ApiError::bad_request("spec.replicas: Required value: the Scale names no replica count")),
    }
}

/// Serves GET, PUT and PATCH on `.../deployments/{name}/scale`.
pub(crate) async fn serve(state: &AppState, identity: &Identity, target: &Target, method: &Method, headers: &HeaderMap, body: &[u8], dry_run: bool) -> Result<Response, ApiError> {
    let verb = match *method {
        Method::GET => Verb::Get,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        _ => return Err(ApiError::method_not_allowed()),
    };
    authorize(state, identity, target, verb, None).await?;
    let name = target.name.as_deref().unwrap_or("");
    if verb == Verb::Get {
        let stored = state
            .store
            .get(&target.key(name))
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, name))?
            .ok_or_else(|| ApiError::not_found(target.resource, name))?;
        return Ok(Json(scale_of(&with_revision(stored.value, stored.mod_rev))).into_response());
    }
    let kind = if verb == Verb::Patch {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        Some(PatchType::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?)
    } else {
        None
    };
    let incoming: Value = match kind {
        Some(_) => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?,
        None => objects::parse_object(body).map_err(ApiError::bad_request)?,
    };
    let requested = match incoming.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("{v:?} is not a resource version")))?),
        None => None,
    };
    let written = write_back(state, target, requested, dry_run, |stored| {
        // A Scale has no lists: a strategic merge patch of it is a merge patch; a JSON patch
        // addresses the Scale's fields.
        let scale = match kind {
            Some(PatchType::Json) => patch::apply(PatchType::Json, &scale_of(stored), &incoming, None).map_err(|e| patch_error(e, target))?,
            Some(_) => {
                let mut scale = scale_of(stored);
                objects::merge_patch(&mut scale, &incoming);
                scale
            }
            None => incoming.clone(),
        };
        let replicas = wanted_replicas(&scale)?;
        let mut next = stored.clone();
        next["spec"]["replicas"] = json!(replicas);
        let mut next = objects::merge_update(stored, next, false);
        objects::validate(target.resource, target.name.as_deref().unwrap_or(""), &mut next, objects::FieldValidation::Ignore)?;
        Ok(next)
    })
    .await?;
    Ok(Json(scale_of(&written)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_of_a_deployment_carries_its_replicas_and_selector() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "front"}}},
            "status": {"replicas": 2},
        });
        let s = scale_of(&d);
        assert_eq!((s["kind"].as_str(), s["apiVersion"].as_str()), (Some("Scale"), Some("autoscaling/v1")));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web,tier=front"}));
    }

    #[test]
    fn a_scale_without_or_with_negative_replicas_is_refused() {
        assert_eq!(wanted_replicas(&json!({"spec": {"replicas": 4}})).unwrap(), 4);
        assert_eq!(wanted_replicas(&json!({"spec": {}})).unwrap_err().0.code, 400);
        assert_eq!(wanted_replicas(&json!({"spec": {"replicas": -1}})).unwrap_err().0.code, 400);
    }
}
