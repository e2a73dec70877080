//! Classifying storage failures once, at the boundary, by HTTP status and storage error
//! code — never by matching message text.

use crate::secret::redact_text;

/// What to do about a failed storage call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The service could not be reached or could not serve the request now: connection
    /// failures, timeouts, throttling (429, 503) and server errors (500, 502, 504). Nothing
    /// is wrong with the item: it waits out the outage without using up an attempt.
    Unavailable,
    /// Worth retrying later, and the item's own doing: a lease or a pending copy in the
    /// way, a blob that kept changing. Each retry uses up an attempt.
    Transient,
    /// The source changed since the work was planned (a source ETag condition failed).
    SourceChanged,
    /// The source blob (or container) is gone.
    SourceMissing,
    /// Credentials are wrong or expired: stop work, retrying will not help until an
    /// operator acts, but the work must not be dropped.
    Auth,
    /// Retrying the same request will fail again.
    Permanent,
}

impl FailureClass {
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::Unavailable | FailureClass::Transient | FailureClass::Auth
        )
    }
}

/// Classifies an SDK error.
pub fn classify(err: &azure_core::Error) -> FailureClass {
    use azure_core::error::ErrorKind;
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => classify_status(u16::from(*status), error_code.as_deref()),
        ErrorKind::Connection | ErrorKind::Io => FailureClass::Unavailable,
        ErrorKind::Credential => FailureClass::Auth,
        _ => FailureClass::Permanent,
    }
}

/// Classification by status and storage error code.
/// <https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes>
pub fn classify_status(status: u16, code: Option<&str>) -> FailureClass {
    match (status, code) {
        (_, Some("SourceConditionNotMet")) => FailureClass::SourceChanged,
        // Azurite answers a stale x-ms-source-if-match with ConditionNotMet.
        (412, Some("ConditionNotMet")) => FailureClass::SourceChanged,
        (404, Some("BlobNotFound" | "ContainerNotFound")) => FailureClass::SourceMissing,
        (404, Some("CannotVerifyCopySource")) => FailureClass::SourceMissing,
        (403, Some("CannotVerifyCopySource")) => FailureClass::Auth,
        (401 | 403, _) => FailureClass::Auth,
        (408 | 429 | 500 | 502 | 503 | 504, _) => FailureClass::Unavailable,
        (
            409,
            Some("LeaseIdMissing" | "LeaseAlreadyPresent" | "LeaseIdMismatchWithBlobOperation"),
        ) => FailureClass::Transient,
        (409, Some("PendingCopyOperation")) => FailureClass::Transient,
        _ => FailureClass::Permanent,
    }
}

/// The storage error code of an SDK error, if the service sent one.
pub fn error_code(err: &azure_core::Error) -> Option<&str> {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// An error and its causes on one line (`outer: cause: root cause`), for reports and logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A one-line description of an SDK error safe to log or to store in a poison record:
/// status, code, and message with every SAS signature redacted.
pub fn describe(err: &azure_core::Error) -> String {
    let text = match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => format!(
            "HTTP {} {}: {err}",
            u16::from(*status),
            error_code.as_deref().unwrap_or("-")
        ),
        // Transport failures wrap the cause (refused, DNS, timeout) a few levels down.
        _ => chain(err),
    };
    redact_text(&text.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        assert_eq!(
            classify_status(503, Some("ServerBusy")),
            FailureClass::Unavailable
        );
        assert_eq!(
            classify_status(500, Some("OperationTimedOut")),
            FailureClass::Unavailable
        );
        assert_eq!(
            classify_status(409, Some("LeaseAlreadyPresent")),
            FailureClass::Transient
        );
        assert_eq!(
            classify_status(412, Some("SourceConditionNotMet")),
            FailureClass::SourceChanged
        );
        assert_eq!(
            classify_status(412, Some("ConditionNotMet")),
            FailureClass::SourceChanged
        );
        assert_eq!(
            classify_status(404, Some("BlobNotFound")),
            FailureClass::SourceMissing
        );
        assert_eq!(
            classify_status(403, Some("AuthenticationFailed")),
            FailureClass::Auth
        );
        assert_eq!(
            classify_status(400, Some("InvalidHeaderValue")),
            FailureClass::Permanent
        );
        assert!(FailureClass::Auth.is_retryable());
        assert!(!FailureClass::Permanent.is_retryable());
    }
}
