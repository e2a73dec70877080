//! Process exit codes shared by the binaries.

/// The exit codes, as `--help` shows them.
pub const HELP: &str = "Exit codes:
  0  success
  1  finished with failures: a container not planned or not verified, the tombstone
     cap crossed, a job completed with failures, differences found; the output says which
  2  usage or configuration error: the message names the flag or field to change
  3  credentials rejected or expired: nothing was dropped, work stays queued";

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
