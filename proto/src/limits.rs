//! Sizes set on purpose at every hop, in one place.
//!
//! Every gRPC server and client sets its decoding and encoding limits from
//! here instead of taking tonic's defaults (4 MiB in, unbounded out): a
//! message one side may send and the other refuses to read breaks the
//! stream it travels on, and on the worker link that is every session of
//! the worker. So what users send is checked against the content limits
//! below at the controller, before anything is stored, and the content
//! limits sit well under the transport limits of every hop after it.

/// Any request from a CLI to the controller (a spawn with its prompt, a
/// message for `ao send`, a config for `ao apply`).
pub const MAX_REQUEST_BYTES: usize = 4 * MIB;

/// Any answer from the controller to a CLI (`ao status` of thousands of
/// sessions included).
pub const MAX_RESPONSE_BYTES: usize = 64 * MIB;

/// Any message on the worker link or a tunnel, both ways.
pub const MAX_LINK_MESSAGE_BYTES: usize = 8 * MIB;

/// A join request or answer (a token, a CSR, a certificate): the one call
/// a caller without a certificate may make.
pub const MAX_JOIN_BYTES: usize = 64 * 1024;

/// A session's task prompt.
pub const MAX_PROMPT_BYTES: usize = MIB;

/// One message for `ao send`, or one chunk of keys from `ao attach`.
pub const MAX_INPUT_BYTES: usize = MIB;

/// An issue id, an agent name, a branch name.
pub const MAX_NAME_BYTES: usize = 256;

/// The labels a spawn asks for, keys and values together.
pub const MAX_LABELS_BYTES: usize = 4096;

const MIB: usize = 1024 * 1024;

/// A value over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {} ({size} bytes); the limit is {}", human(*.size), human(*.limit))]
pub struct TooLarge {
    pub what: String,
    pub size: usize,
    pub limit: usize,
}

/// Checks `size` against `limit`.
///
/// # Errors
/// [`TooLarge`] naming `what` when it is over.
pub fn check(what: impl Into<String>, size: usize, limit: usize) -> Result<(), TooLarge> {
    if size <= limit {
        return Ok(());
    }
    Err(TooLarge {
        what: what.into(),
        size,
        limit,
    })
}

/// A byte count for people: `1.0 MiB`, `300 KiB`, `12 bytes`.
pub fn human(bytes: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if bytes >= MIB {
        format!("{:.1} MiB", b / MIB as f64)
    } else if bytes >= 1024 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_limits_fit_every_hop() {
        // A prompt or message at its limit, plus the rest of its request or
        // assignment, must pass every transport limit after the controller.
        let headroom = 2 * MIB;
        assert!(MAX_PROMPT_BYTES + headroom <= MAX_REQUEST_BYTES);
        assert!(MAX_INPUT_BYTES + headroom <= MAX_REQUEST_BYTES);
        assert!(MAX_REQUEST_BYTES + headroom <= MAX_LINK_MESSAGE_BYTES);
    }

    #[test]
    fn over_the_limit_names_what_and_both_sizes() {
        assert!(check("x", 10, 10).is_ok());
        let err = check("the prompt", 4 * MIB - 10, MAX_PROMPT_BYTES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the prompt is 4.0 MiB (4194294 bytes); the limit is 1.0 MiB"
        );
        assert_eq!(human(300 * 1024), "300 KiB");
        assert_eq!(human(12), "12 bytes");
    }
}
