//! How an AWS error is classified, from its code and HTTP status.

/// What an AWS failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// AWS said slow down: the call was not performed; retry after a pause.
    Throttled,
    /// A server error: the call may or may not have taken effect; it may succeed later.
    Transient,
    /// Anything else (not found, access denied, validation): retrying will not help.
    Permanent,
}

impl ErrorClass {
    /// Throttling and server errors may succeed later (and may serve a stale value).
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Throttled | ErrorClass::Transient)
    }
}

/// Whether an AWS error code says the caller is being throttled: any code with
/// `Throttl` in it (`ThrottlingException`, `Throttling`, `RequestThrottled`, ...),
/// `TooManyRequestsException`, `RequestLimitExceeded`, `SlowDown` (S3).
pub fn is_throttling_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "TooManyRequestsException" | "TooManyRequests" | "RequestLimitExceeded" | "SlowDown"
        )
}

/// Classifies an AWS error by its code and, when AWS answered, its HTTP status: a
/// throttling code or a 429 is [`ErrorClass::Throttled`], a 5xx (or AWS's own
/// internal-error and unavailable codes) [`ErrorClass::Transient`], anything else
/// [`ErrorClass::Permanent`].
pub fn classify(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if code.is_some_and(is_throttling_code) || status == Some(429) {
        return ErrorClass::Throttled;
    }
    let server_code = code.is_some_and(|code| {
        matches!(
            code,
            "InternalServerError"
                | "InternalServerException"
                | "InternalServiceError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
        )
    });
    if server_code || status.is_some_and(|s| s >= 500) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_any_throttle_code_or_a_429() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "ThrottledException",
            "RequestThrottled",
            "RequestThrottledException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "SlowDown",
        ] {
            assert_eq!(
                classify(Some(code), Some(400)),
                ErrorClass::Throttled,
                "{code}"
            );
        }
        // A 429 whose code says nothing of throttling is still throttling.
        assert_eq!(
            classify(Some("LimitExceeded"), Some(429)),
            ErrorClass::Throttled
        );
        assert_eq!(classify(None, Some(429)), ErrorClass::Throttled);
    }

    #[test]
    fn server_errors_are_transient_and_the_rest_permanent() {
        assert_eq!(
            classify(Some("InternalServerError"), Some(500)),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(Some("ServiceUnavailable"), None),
            ErrorClass::Transient
        );
        assert_eq!(classify(Some("Whatever"), Some(503)), ErrorClass::Transient);
        for (code, status) in [
            ("ParameterNotFound", 400),
            ("AccessDeniedException", 403),
            ("ValidationException", 400),
        ] {
            assert_eq!(
                classify(Some(code), Some(status)),
                ErrorClass::Permanent,
                "{code}"
            );
        }
        assert!(ErrorClass::Throttled.is_transient() && ErrorClass::Transient.is_transient());
        assert!(!ErrorClass::Permanent.is_transient());
    }
}
