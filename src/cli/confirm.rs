//! Asking a person to confirm a plan, the same for every backend.

use std::io::{BufRead, IsTerminal, Write};

/// The user did not confirm (or could not be asked).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotApproved(pub String);

/// Ask for `yes` on the terminal, unless `auto_approve`. Without a terminal and
/// without `auto_approve` nobody can confirm, so that is a refusal too.
pub fn confirm(auto_approve: bool) -> anyhow::Result<()> {
    if auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(NotApproved(
            "refusing to apply: stdin is not a terminal, so nobody can confirm the plan; pass --auto-approve to apply without confirmation".into(),
        )
        .into());
    }
    {
        let mut err = std::io::stderr().lock();
        write!(err, "\nApply these changes? Only 'yes' is accepted: ")?;
        err.flush()?;
    }
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(NotApproved(
            "apply cancelled: the answer was not 'yes'; nothing was changed".into(),
        )
        .into());
    }
    Ok(())
}
