//! How the console shows a backend's fleet state: a colour, a symbol and a word, so the state
//! reads without colour too.

use crate::store::BackendState;

pub(crate) struct StateBadge {
    /// `ok`, `warn`, `bad` or `off`: the badge's CSS class.
    pub tone: &'static str,
    pub icon: &'static str,
    pub label: &'static str,
}

/// `None`: no connected proxy reports the backend.
pub(crate) fn badge(state: Option<BackendState>) -> StateBadge {
    let (tone, icon, label) = match state {
        Some(BackendState::Available) => ("ok", "✓", "Available"),
        Some(BackendState::Cooling) => ("warn", "◔", "Cooling"),
        Some(BackendState::Ejected) => ("bad", "✕", "Ejected"),
        Some(BackendState::NoCredential) => ("bad", "⚠", "No credential"),
        Some(BackendState::Disabled) => ("off", "⏸", "Disabled"),
        None => ("off", "?", "Not reported"),
    };
    StateBadge { tone, icon, label }
}

/// `14:03:12 UTC` from an RFC 3339 time of today; dates are left out as cooldowns are short.
pub(crate) fn clock(rfc3339_text: &str) -> String {
    let readable = super::view::readable(rfc3339_text);
    match readable.split_once(' ') {
        Some((_, time)) => time.to_owned(),
        None => readable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_word() {
        let mut labels: Vec<_> = BackendState::ALL
            .iter()
            .map(|s| badge(Some(*s)).label)
            .chain([badge(None).label])
            .collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), BackendState::ALL.len() + 1);
        assert_eq!(clock("2026-12-03T14:03:12.5Z"), "14:03:12 UTC");
    }
}
