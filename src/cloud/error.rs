//! Cloud errors, already turned into meaning at the cloud boundary.

use std::fmt;

/// What kind of failure a cloud call had, as far as callers need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The resource does not exist (or is not visible yet, right after a create).
    NotFound,
    /// Something still depends on the resource; deleting it later may succeed.
    DependencyViolation,
    /// The API asked us to slow down.
    Throttled,
    /// The resource already exists (a duplicate name, rule or association).
    AlreadyExists,
    /// The request was refused as invalid; retrying will not help.
    Invalid,
    /// The credentials are missing or not allowed to do this.
    AccessDenied,
    /// The request did not get an answer (connection refused, timeout, broken response).
    Transport,
    /// A retry deadline or budget ran out.
    GaveUp,
    /// Anything else.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::DependencyViolation => "still in use by another resource",
            ErrorKind::Throttled => "throttled",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Invalid => "refused as invalid",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::Transport => "no answer from the cloud API",
            ErrorKind::GaveUp => "gave up",
            ErrorKind::Other => "failed",
        })
    }
}

/// A failed cloud call: what was being done, what kind of failure, and the cloud's own code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    /// What was being done, e.g. `creating subnet 10.0.1.0/24 in us-east-1a`.
    pub action: String,
    pub kind: ErrorKind,
    /// The cloud's error code, e.g. `InvalidVpcID.NotFound`.
    pub code: Option<String>,
    /// The cloud's message, or the transport error.
    pub message: String,
}

impl CloudError {
    /// A new error.
    pub fn new(action: impl Into<String>, kind: ErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        CloudError { action: action.into(), kind, code, message: message.into() }
    }

    /// Classifies an AWS error code into an [`ErrorKind`].
    pub fn kind_of_code(code: &str) -> ErrorKind {
        match code {
            "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "ThrottledException"
            | "TooManyRequestsException" | "RequestThrottled" | "RequestThrottledException"
            | "SlowDown" | "EC2ThrottledException" | "PriorRequestNotComplete" => ErrorKind::Throttled,
            "DependencyViolation" | "ResourceInUse" | "InvalidGroup.InUse" | "DeleteConflict" => ErrorKind::DependencyViolation,
            "InvalidKeyPair.Duplicate" | "InvalidGroup.Duplicate" | "DuplicateLoadBalancerName"
            | "DuplicateTargetGroupName" | "DuplicateListener" | "Resource.AlreadyAssociated"
            | "InvalidPermission.Duplicate" | "RouteAlreadyExists" | "DuplicateTagKeys" | "EntityAlreadyExists" => ErrorKind::AlreadyExists,
            "NoSuchEntity" => ErrorKind::NotFound,
            "MalformedPolicyDocument" => ErrorKind::Invalid,
            "AuthFailure" | "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException"
            | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken" => ErrorKind::AccessDenied,
            "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => ErrorKind::Transport,
            c if c.ends_with(".NotFound") || c.ends_with("NotFound") || c.ends_with(".Malformed.NotFound") => {
                ErrorKind::NotFound
            }
            c if c.starts_with("Invalid") || c.ends_with("ValidationError") || c == "ValidationError" => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        }
    }

    /// Whether this is a not-found answer.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.action, self.kind)?;
        match (&self.code, self.message.is_empty()) {
            (Some(code), false) => write!(f, " ({code}: {})", self.message),
            (Some(code), true) => write!(f, " ({code})"),
            (None, false) => write!(f, " ({})", self.message),
            (None, true) => Ok(()),
        }
    }
}

impl std::error::Error for CloudError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_codes_are_classified_by_meaning() {
        assert_eq!(CloudError::kind_of_code("RequestLimitExceeded"), ErrorKind::Throttled);
        assert_eq!(CloudError::kind_of_code("Throttling"), ErrorKind::Throttled);
        assert_eq!(CloudError::kind_of_code("InvalidInstanceID.NotFound"), ErrorKind::NotFound);
        assert_eq!(CloudError::kind_of_code("LoadBalancerNotFound"), ErrorKind::NotFound);
        assert_eq!(CloudError::kind_of_code("DependencyViolation"), ErrorKind::DependencyViolation);
        assert_eq!(CloudError::kind_of_code("InvalidKeyPair.Duplicate"), ErrorKind::AlreadyExists);
        assert_eq!(CloudError::kind_of_code("InvalidParameterValue"), ErrorKind::Invalid);
        assert_eq!(CloudError::kind_of_code("Mystery"), ErrorKind::Other);
        assert_eq!(CloudError::kind_of_code("NoSuchEntity"), ErrorKind::NotFound);
        assert_eq!(CloudError::kind_of_code("EntityAlreadyExists"), ErrorKind::AlreadyExists);
        assert_eq!(CloudError::kind_of_code("DeleteConflict"), ErrorKind::DependencyViolation);
    }

    #[test]
    fn display_says_what_was_being_done_and_the_code() {
        let e = CloudError::new("creating subnet 10.0.1.0/24 in us-east-1a", ErrorKind::Invalid, Some("InvalidSubnet.Range".into()), "bad range");
        assert_eq!(e.to_string(), "creating subnet 10.0.1.0/24 in us-east-1a: refused as invalid (InvalidSubnet.Range: bad range)");
    }
}
