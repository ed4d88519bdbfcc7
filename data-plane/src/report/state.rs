//! A backend's state as the report carries it.

use sluice_model::proto::BackendState;

use crate::backend::State;

/// The wire state and, for a cooling or ejected backend, when it is tried again (Unix
/// milliseconds; 0 otherwise).
pub fn wire_state(state: State, now_unix_ms: u64) -> (BackendState, u64) {
    let back_at = |wait: std::time::Duration| {
        now_unix_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    };
    match state {
        State::Available => (BackendState::Available, 0),
        State::Cooling(wait) => (BackendState::Cooling, back_at(wait)),
        State::Ejected(wait) => (BackendState::Ejected, back_at(wait)),
        State::NoCredential => (BackendState::NoCredential, 0),
        State::Disabled => (BackendState::Disabled, 0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn maps_every_state_and_dates_the_waiting_ones() {
        let now = 1_700_000_000_000;
        let cases = [
            (State::Available, (BackendState::Available, 0)),
            (
                State::Cooling(Duration::from_millis(1_500)),
                (BackendState::Cooling, now + 1_500),
            ),
            (
                State::Ejected(Duration::from_secs(30)),
                (BackendState::Ejected, now + 30_000),
            ),
            (State::NoCredential, (BackendState::NoCredential, 0)),
            (State::Disabled, (BackendState::Disabled, 0)),
        ];
        for (state, expected) in cases {
            assert_eq!(wire_state(state, now), expected, "{state:?}");
        }
        assert_eq!(
            wire_state(State::Ejected(Duration::MAX), now).1,
            u64::MAX,
            "saturates"
        );
    }
}
