//! Process exit codes shared by the binaries.

/// Finished.
pub const OK: i32 = 0;
/// Finished, but some containers could not be planned; the report says which and why.
pub const PARTIAL: i32 = 1;
/// Bad configuration or setup: the message names what to change.
pub const CONFIG: i32 = 2;
/// Credentials rejected or expired: nothing was dropped; fix the credential and rerun.
pub const CREDENTIALS: i32 = 3;

/// The exit code for an error that ended a command.
pub fn code_for(err: &anyhow::Error) -> i32 {
    let credential = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<crate::storage::AccountError>(),
            Some(crate::storage::AccountError::Sas { .. })
        ) || cause.downcast_ref::<crate::sas::SasError>().is_some()
    });
    if credential { CREDENTIALS } else { CONFIG }
}
