//! Action headers that make Asterisk evaluate channel variables or dialplan functions: such a
//! header turns an action into `Getvar` under another name (`Status` with
//! `Variables: AST_CONFIG(manager.conf,admin,secret)` returns the AMI secret), so it needs the
//! right to send `Getvar`. Pure: it knows actions and right names, not users, sockets or JSON.
//!
//! Audited against Asterisk's `main/manager.c` and the modules registering the read-only set:
//! - `Status`: `Variables` is read with `ast_func_read` (a name ending in `)`) or
//!   `pbx_retrieve_variable` for every channel; `AllVariables` dumps every channel variable.
//! - `ExtensionState` (`Exten`, `Context`: a hint lookup), `PresenceState` (`Provider`: a
//!   registered presence provider such as `CustomPresence:` reading its own astdb family),
//!   `MailboxCount`/`MailboxStatus` (`Mailbox`), the queue, bridge, PJSIP, agent, parking and
//!   conference lists: their headers are names to look up, never substituted or evaluated.
//! - Nothing else in the read-only set calls `ast_func_read`, `pbx_retrieve_variable` or
//!   `pbx_substitute_variables*` on a client's header.

use crate::ami::Action;

/// The action whose right an evaluated header needs: it evaluates any variable or function.
pub const NEEDED_RIGHT: &str = "Getvar";

/// (action, header) pairs Asterisk evaluates; names compared ASCII case-insensitively.
const EVALUATED: &[(&str, &str)] = &[("Status", "Variables"), ("Status", "AllVariables")];

/// The first header of `action` that Asterisk evaluates as variables or functions, if any.
/// Names are trimmed before comparing, which is stricter than Asterisk's own match.
pub fn evaluated_header(action: &Action) -> Option<&'static str> {
    let name = action.name().trim();
    EVALUATED
        .iter()
        .filter(|(a, _)| a.eq_ignore_ascii_case(name))
        .find(|(_, h)| {
            action
                .headers()
                .any(|(n, _)| n.trim().eq_ignore_ascii_case(h))
        })
        .map(|(_, h)| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_variables_in_any_case_or_spacing_are_found() {
        let a = Action::new("Status").header("Variables", "AST_CONFIG(manager.conf,admin,secret)");
        assert_eq!(evaluated_header(&a), Some("Variables"));
        let a = Action::new(" status ")
            .header("Channel", "PJSIP/1")
            .header("variables ", "ENV(HOME)");
        assert_eq!(evaluated_header(&a), Some("Variables"));
        let a = Action::new("STATUS").header("ALLVARIABLES", "true");
        assert_eq!(evaluated_header(&a), Some("AllVariables"));
    }

    #[test]
    fn plain_status_and_other_actions_pass() {
        assert_eq!(evaluated_header(&Action::new("Status")), None);
        let a = Action::new("Status").header("Channel", "PJSIP/100-1");
        assert_eq!(evaluated_header(&a), None);
        let a = Action::new("PresenceState").header("Provider", "CustomPresence:100");
        assert_eq!(evaluated_header(&a), None);
        let a = Action::new("CoreStatus").header("Variables", "x");
        assert_eq!(evaluated_header(&a), None);
    }
}
