//! Running user code so that a panic is a failure of that call, not of the caller.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Builds a future with `make` and awaits it; a panic in either step becomes `Err` with the
/// panic's message. (A closure handler can panic in its synchronous part, while making its
/// future, as well as while running it.)
pub(crate) async fn catch<F, Fut>(make: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let fut = std::panic::catch_unwind(AssertUnwindSafe(make)).map_err(|p| message(p.as_ref()))?;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| message(p.as_ref()))
}

/// The text of a panic payload.
pub(crate) fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn catches_panics_while_making_and_while_running() {
        assert_eq!(catch(|| async { 5 }).await, Ok(5));
        let sync = catch(|| -> std::future::Ready<()> { panic!("early") }).await;
        assert_eq!(sync, Err("early".to_string()));
        let later = catch(|| async { panic!("late {}", 1) }).await;
        assert_eq!(later, Err("late 1".to_string()));
    }
}
