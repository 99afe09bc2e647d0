//! Failed requests as Kubernetes `Status` responses, with Kubernetes' wording.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::store::StoreError;
use crate::api::resource::ResourceType;
use crate::api::schema::FieldError;
use crate::api::{Status, StatusCause, StatusDetails, StatusReason};

/// A request that failed; becomes a `Status` body with the matching HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Status>);

fn details(resource: &ResourceType, name: &str) -> StatusDetails {
    StatusDetails { name: name.into(), group: resource.group.into(), kind: resource.plural.into(), ..Default::default() }
}

impl ApiError {
    fn new(reason: StatusReason, code: u16, message: impl Into<String>) -> Self {
        ApiError(Box::new(Status::failure(reason, code, message)))
    }

    fn about(reason: StatusReason, code: u16, resource: &ResourceType, name: &str, message: String) -> Self {
        ApiError(Box::new(Status::failure(reason, code, message).with_details(details(resource, name))))
    }

    /// 404: the named object does not exist.
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::about(StatusReason::NotFound, 404, resource, name, format!("{resource} {name:?} not found"))
    }

    /// 404: the path names no served resource.
    pub fn no_route() -> Self {
        Self::new(StatusReason::NotFound, 404, "the server could not find the requested resource")
    }

    /// 409 AlreadyExists: create of a name that is taken.
    pub fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::about(StatusReason::AlreadyExists, 409, resource, name, format!("{resource} {name:?} already exists"))
    }

    /// 409 Conflict: the object changed since the client read it.
    /// 409 for a failed precondition other than the resource version.
    pub fn conflict_because(resource: &ResourceType, name: &str, why: String) -> Self {
        Self::about(StatusReason::Conflict, 409, resource, name, format!("Operation cannot be fulfilled on {resource} {name:?}: {why}"))
    }

    pub fn conflict(resource: &ResourceType, name: &str) -> Self {
        Self::about(
            StatusReason::Conflict,
            409,
            resource,
            name,
            format!("Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again"),
        )
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusReason::BadRequest, 400, message)
    }

    /// 422: the object is well-formed JSON but not a valid object.
    pub fn invalid(resource: &ResourceType, name: &str, message: impl std::fmt::Display) -> Self {
        Self::invalid_with_causes(resource, name, message.to_string(), Vec::new())
    }

    /// 422 `Invalid` for an object refused by its kind's schema, as Kubernetes' `errors.NewInvalid`:
    /// `Deployment.apps "web" is invalid: spec.replicas: ...` (several fields in brackets), and one
    /// cause per field.
    pub fn invalid_fields(resource: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let listed = if listed.len() == 1 { listed.concat() } else { format!("[{}]", listed.join(", ")) };
        let causes = errors
            .iter()
            .map(|e| StatusCause { reason: e.kind.reason().into(), message: e.message.clone(), field: e.field.clone() })
            .collect();
        Self::invalid_with_causes(resource, name, listed, causes)
    }

    /// Invalid is about a kind (`Deployment.apps`), where the other reasons name a resource.
    fn invalid_with_causes(resource: &ResourceType, name: &str, message: String, causes: Vec<StatusCause>) -> Self {
        let kind = if resource.group.is_empty() { resource.kind.to_string() } else { format!("{}.{}", resource.kind, resource.group) };
        let details = StatusDetails { name: name.into(), group: resource.group.into(), kind: resource.kind.into(), causes, ..Default::default() };
        ApiError(Box::new(Status::failure(StatusReason::Invalid, 422, format!("{kind} {name:?} is invalid: {message}")).with_details(details)))
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusReason::Unauthorized, 401, message)
    }

    /// 403: the identity may not do this.
    pub fn forbidden(resource: &ResourceType, name: &str, message: String) -> Self {
        Self::about(StatusReason::Forbidden, 403, resource, name, message)
    }

    /// 403 for a path that is not a resource (Kubernetes' wording for non-resource URLs).
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self::new(StatusReason::Forbidden, 403, format!("forbidden: User {user:?} cannot {verb} path {path:?}"))
    }

    /// 405: the verb does not apply to this path.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusReason::MethodNotAllowed, 405, "the server does not allow this method on the requested resource")
    }

    /// 406: the answer cannot take the form the `Accept` header asks for.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusReason::NotAcceptable, 406, message)
    }

    /// 415: a body format this server does not read (e.g. strategic merge patch).
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(StatusReason::UnsupportedMediaType, 415, format!("the body of the request was in an unknown format: {content_type}"))
    }

    /// 429 beyond a cap, with when to retry (the caller adds the `Retry-After` header).
    pub fn too_many_requests(message: &str, retry_after_seconds: i32) -> Self {
        let details = StatusDetails { retry_after_seconds: Some(retry_after_seconds), ..Default::default() };
        ApiError(Box::new(Status::failure(StatusReason::TooManyRequests, 429, message).with_details(details)))
    }

    /// 410 Expired: a resource version older than the store's history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusReason::Expired, 410, message)
    }

    /// 504 for a list at a revision the store has not reached after a wait, as Kubernetes'
    /// `NewTooLargeResourceVersionError`: `Timeout` with the cause `ResourceVersionTooLarge`.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let message = format!("Too large resource version: {requested}, current: {current}");
        let cause = StatusCause { reason: "ResourceVersionTooLarge".into(), message: "Too large resource version".into(), field: String::new() };
        let details = StatusDetails { causes: vec![cause], ..Default::default() };
        ApiError(Box::new(Status::failure(StatusReason::Timeout, 504, message).with_details(details)))
    }

    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusReason::InternalError, 500, message)
    }

    /// 503: the server cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusReason::ServiceUnavailable, 503, message)
    }

    /// The response to a store failure while working on `resource` `name`.
    pub fn from_store(e: StoreError, resource: &ResourceType, name: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(resource, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(resource, name),
            StoreError::Conflict { .. } => Self::conflict(resource, name),
            StoreError::TooOld { requested, compacted } => {
                Self::expired(format!("too old resource version: {requested} (history starts after {compacted})"))
            }
            // Kubernetes answers 504 "Too large resource version" after a wait; 410 makes every client
            // re-list at once, which is what a client holding a revision from before a restore needs.
            StoreError::FutureRevision { requested, current } => {
                Self::expired(format!("resource version {requested} is ahead of the store's revision {current}: list again"))
            }
            e @ (StoreError::Corrupt { .. } | StoreError::Backend { .. }) => {
                let chain = error_chain(&e);
                tracing::error!(error = %chain, "store failure");
                Self::internal(chain)
            }
        }
    }
}

/// An error and its sources, `outer: inner: ...`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.0)).into_response()
    }
}
