//! The error type that travels between tower layers, and helpers to classify it.
//!
//! Inside a stack every layer returns [`Error`] (a boxed `std::error::Error`).
//! The edge (`kdp_proxy::respond`) turns it into an HTTP response by looking
//! for concrete causes with [`cause_ref`]; nothing ever matches on message
//! strings.

use std::fmt;

/// A boxed error, the error type of every service inside a kdp stack.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Displays an error followed by every `source()` in its chain, separated by `: `.
///
/// Leaf errors follow hyper's rule: `Display` describes only their own level,
/// so logging through this adapter prints each cause exactly once.
///
/// ```
/// use kdp_core::ErrorChain;
/// let err = std::io::Error::other("boom");
/// assert_eq!(ErrorChain(&err).to_string(), "boom");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(err) = next {
            write!(f, ": {err}")?;
            next = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Finds the first error of type `E` in `err`'s source chain (including `err` itself).
pub fn cause_ref<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(e) = err.downcast_ref::<E>() {
            return Some(e);
        }
        next = err.source();
    }
    None
}

/// True when an error of type `E` appears anywhere in `err`'s source chain.
pub fn is_caused_by<E: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> bool {
    cause_ref::<E>(err).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_prints_each_cause_once() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&err).to_string(), "outer: inner");
    }

    #[test]
    fn finds_cause_through_box() {
        let err: Error = Box::new(Outer(std::io::Error::other("inner")));
        assert!(is_caused_by::<std::io::Error>(err.as_ref()));
        assert!(cause_ref::<Outer>(err.as_ref()).is_some());
        assert!(!is_caused_by::<fmt::Error>(err.as_ref()));
    }
}
